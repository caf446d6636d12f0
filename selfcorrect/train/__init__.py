"""SCoRe training: objectives (pure torch), the DeepSpeed engine, and the per-stage loop."""
