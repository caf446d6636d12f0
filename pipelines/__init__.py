"""The SCoRe pipeline (KFP v2) and how it is compiled and run."""

#: the pipeline's name on KFP; each code version is a pipeline version under it
PIPELINE_NAME = "selfcorrect-score"
