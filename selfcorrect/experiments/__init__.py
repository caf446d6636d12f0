"""The research harness on the testbed: the testbed model, the baselines, the paper's rows and
their tables. The product (data, verification, training, evaluation, the pipeline) never imports it."""
