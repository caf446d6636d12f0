from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def validate_data(kind: str, data: Input[Dataset], report: Output[Markdown],
                  problems: Input[Dataset] = None):
    """Great Expectations gate: writes a report and fails the step when the data is bad."""
    from selfcorrect import validate

    validate.gate(kind, data.path, report.path, problems_uri=problems.path if problems else None)
