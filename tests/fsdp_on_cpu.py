"""Run a script under FSDP on CPU processes: `accelerate launch ... tests/fsdp_on_cpu.py train_sft.py --config ...`.

accelerate 1.15 only turns a run into FSDP when the processes are GPU-like (AcceleratorState.__init__ switches
`distributed_type` to FSDP only from MULTI_GPU, MULTI_XPU, MULTI_NPU, ...). On CPU processes it stays MULTI_CPU
and the model is silently wrapped in DDP instead, with no error. torch's FSDP2 (`fully_shard`) itself runs on CPU
with gloo, so this test launcher lifts that one gate: when accelerate was given an FSDP plugin but chose MULTI_CPU,
it records FSDP instead, exactly where accelerate would have (the state and the shared PartialState). Everything
else (wrapping, sharding, the optimizer swap, the full state dict on save) is accelerate's and the trainer's own code.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_accelerate_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs) -> None:
    _accelerate_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate does for GPUs


if __name__ == "__main__":
    AcceleratorState.__init__ = _init_with_fsdp_on_cpu
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")
