"""The site's building blocks without Flower: node config, weights check, round learning rate, QIDO filter."""

from __future__ import annotations

import numpy as np
import pytest

from medimg_kernel.client import DICOMfolderClient
from medimg_kernel.errors import ConfigurationError
from medimg_kernel.datasets import TrainingPair
from medimg_kernel.federation import (
    ArchitectureMismatchError, NoTrainingDataError, SiteConfig, SiteData, load_state_arrays, round_learning_rate,
    state_arrays,
)
from medimg_kernel.volume import Volume
from medimg_kernel.model import SegmentationModelConfig, build_network

TINY = SegmentationModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0, roi_size=(16, 32, 32))


def test_node_config_needs_a_site_and_one_source():
    assert SiteConfig.from_node_config({"site": "A", "folder": "/x"}).folder == "/x"
    for bad in ({"folder": "/x"}, {"site": "A"}, {"site": "A", "folder": "/x", "dicomweb-url": "http://h"}):
        with pytest.raises(ConfigurationError, match="node config needs"):
            SiteConfig.from_node_config(bad)


def test_mismatched_weights_are_refused_before_loading():
    network = build_network(TINY)
    before = state_arrays(network)
    other = state_arrays(build_network(SegmentationModelConfig(channels=(8, 16, 32), strides=(2, 2),
                                                               num_res_units=0, roi_size=(16, 32, 32))))
    with pytest.raises(ArchitectureMismatchError, match="site B: received weights do not match"):
        load_state_arrays(network, other, site="B")
    assert all(np.array_equal(before[k], v) for k, v in state_arrays(network).items())
    load_state_arrays(network, before)  # the same architecture loads


def test_round_learning_rate_is_a_cosine_over_rounds():
    assert round_learning_rate(1.0, 1, 10) == 1.0
    assert round_learning_rate(1.0, 6, 10) == pytest.approx(0.5)
    assert 0 < round_learning_rate(1.0, 10, 10) < 0.05
    assert round_learning_rate(1.0, 1, 1) == 1.0


def test_qido_filter_selects_the_sites_studies(demo_sites):
    folder, sites = demo_sites
    client = DICOMfolderClient(folder, readonly=True)
    everything = SiteConfig("all", folder=str(folder)).study_instance_uids(client)
    assert everything is None
    mine = SiteConfig("A", folder=str(folder), qido_filter=f"PatientID={sites[0]}*").study_instance_uids(client)
    assert mine is not None and len(mine) == 2


def test_a_site_whose_studies_are_all_held_out_says_so():
    """Not "no studies at all": the site has a labelled study, and it went to the hold-out."""
    pair = TrainingPair(Volume(np.zeros((1, 2, 2), np.int16), (1.0, 1.0, 1.0)), np.zeros((1, 2, 2), np.uint8),
                        ("liver",), "1.2.3", "1.2.3.1")
    with pytest.raises(NoTrainingDataError, match=r"site A: no training pairs \(its 1 labelled studies are all held "
                                                  r"out for evaluation"):
        SiteData("A", train=(), holdout=(pair,), skipped=()).require_train()
    with pytest.raises(NoTrainingDataError, match=r"\(no studies at all\)"):
        SiteData("A", train=(), holdout=(), skipped=()).require_train()
