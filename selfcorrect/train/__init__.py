"""SCoRe training: objectives (pure torch), the DeepSpeed engine, the per-stage loop, resumable
checkpoints, and GPU launch settings (launch, resources: generated and tested, not run on GPU)."""
