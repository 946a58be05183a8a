import pytest

from tests.reports.pairs_fixture import build_pairs_result


@pytest.fixture
def make_pairs_result():
    return build_pairs_result
