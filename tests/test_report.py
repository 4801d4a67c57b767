"""The terminal table's accuracy cell: what a user reads to judge a variant's drift."""

import math

from controller.fleet.view import accuracy_text


def test_accuracy_cell_shows_top1_and_drift_vs_fp32():
    row = {"variant": "int8", "top1": 0.9638, "cosine_vs_fp32": 0.99991, "rmse_vs_fp32": 0.0041}
    assert accuracy_text(row) == "top1 96.4%, cos 0.9999, rmse 4.1e-03"


def test_fp32_is_its_own_reference_and_missing_values_are_left_out():
    assert accuracy_text({"variant": "fp32", "top1": 1.0, "cosine_vs_fp32": 1.0, "rmse_vs_fp32": 0.0}) == "top1 100.0%"
    assert accuracy_text({"variant": "fp16", "top1": math.nan, "cosine_vs_fp32": None,
                          "rmse_vs_fp32": 7e-5}) == "rmse 7.0e-05"
    assert accuracy_text({"variant": "int8", "top1": None}) == "-"
