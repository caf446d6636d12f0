import doctest

import pytest

from selfcorrect import evaluate
from selfcorrect.data import arithmetic


@pytest.mark.parametrize("module", [evaluate, arithmetic])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
