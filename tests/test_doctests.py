import doctest

import pytest

from selfcorrect import evaluate
from selfcorrect.experiments import baselines, repro_compare, testbed, testbed_base
from selfcorrect.data import arithmetic, chain
from selfcorrect.train import sft


@pytest.mark.parametrize("module", [evaluate, arithmetic, chain, testbed, testbed_base, sft, baselines,
                                    repro_compare])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
