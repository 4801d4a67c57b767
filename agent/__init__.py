"""edgebench agent: measures one TFLite model on the device it runs on.

Runs ON the device. It imports nothing beyond the standard library, numpy and one TFLite runtime
(psutil optional): a test enforces this from ``sys.modules`` of a real run. numpy and the runtime are
imported lazily, in the worker process, so ``--help`` and ``info`` stay cheap.
"""

__version__ = "0.1.0"
