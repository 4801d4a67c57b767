"""The result document: versioned JSON that crosses the wire from agent to controller.

History of SCHEMA_VERSION (readers refuse newer versions, migrate older ones):
  1 - first version: status, error, job, model, runtime, timing, memory, env (DESIGN.md).
"""

SCHEMA_VERSION = 1

STATUSES = ("ok", "error", "timeout", "crashed")

# Top-level keys every consumer may rely on. More may be added freely; renaming one needs a bump.
TOP_LEVEL_KEYS = ("schema_version", "status", "error", "job", "model", "runtime", "timing", "memory", "env")

# error.kind values the agent produces (consumers may see others later; treat unknown as generic):
#   "not_a_model"       file is not a TFLite flatbuffer / is truncated
#   "unresolved_op"     custom op the runtime does not have
#   "flex_op"           Select-TF (Flex) op; needs the TensorFlow runtime or the flex delegate
#   "dynamic_shape"     an input has unknown dimensions; give --input-shape NAME=d1,d2,...
#   "bad_inputs"        --inputs file does not match the model's inputs
#   "runtime_error"     anything else the runtime raised
#   "signal"            worker killed by a signal (status "crashed")
#   "timeout"           worker passed its deadline (status "timeout")
#   "worker_failed"     worker exited without writing a document
