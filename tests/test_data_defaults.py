from gahb.data.datasets import DEFAULT_THRESHOLDS, default_threshold, parse_dataset_spec
from gahb.data.dedup import DEDUP_THRESHOLD
from gahb.data.prepared import _request


def test_paper_threshold_is_the_default_except_fashion_mnist():
    assert DEDUP_THRESHOLD == 0.95
    assert default_threshold("folder:/tmp/x") == 0.95
    assert default_threshold("celeba:/tmp/img_align_celeba") == 0.95
    assert default_threshold("fashion-mnist") == DEFAULT_THRESHOLDS["fashion-mnist"] == 0.999


def test_request_records_the_resolved_threshold():
    spec = parse_dataset_spec("fashion-mnist")
    assert _request(spec, None, 1, True, None)["threshold"] == 0.999
    assert _request(spec, None, 1, True, 0.95)["threshold"] == 0.95
    assert _request(spec, None, 1, False, None)["threshold"] is None
