"""One model into its fp32 / fp16 / dynamic-range / int8 variants: conversion, calibration data, the
manifest, and scoring each variant against fp32 (the one scoring function)."""
