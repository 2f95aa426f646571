"""The example pooler passes aunet's pooler kit."""

from aunet_example_pooler import MaxSpec

from aunet.testing import check_pooler


def test_max_pooler_passes_the_kit() -> None:
    check_pooler(MaxSpec(), model_examples=3)
