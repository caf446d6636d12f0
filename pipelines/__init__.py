"""The SCoRe pipeline (KFP v2) and how it is compiled and run."""
