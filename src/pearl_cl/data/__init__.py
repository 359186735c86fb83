"""Datasets, their offline sources, and benchmarks (task sequences) built from them."""

from pearl_cl.data.benchmarks import Benchmark, TaskData, make_benchmark
from pearl_cl.data.sources import ImageSet, load_fashion_mnist, load_mnist

__all__ = ["Benchmark", "ImageSet", "TaskData", "load_fashion_mnist", "load_mnist", "make_benchmark"]
