"""The process settings every training or scoring process takes (`nes.runtime.configure_threads`)."""
import platform
import subprocess
import sys

import pytest

# 10 training steps of a small member network (batch 64, 28 px) after 3 warm-up steps, on 1 thread;
# prints the minor page faults they took
FAULTS = """
import resource, sys, torch, torch.nn.functional as F
from nes.method.network import Network
from nes.method.space import Genotype
from nes.runtime import configure_threads
if sys.argv[1] == "configured":
    configure_threads(1)
else:
    torch.set_num_threads(1)
g = Genotype(reduce=((("sep_conv_5x5", 1),), (("max_pool_3x3", 2),), (("max_pool_3x3", 3),), (("skip_connect", 4),)))
net = Network(g, 12, 10, 2, 1).to(memory_format=torch.channels_last)
x, y = torch.randn(64, 1, 28, 28).contiguous(memory_format=torch.channels_last), torch.arange(64) % 10
def step():
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"),
                    reason="keep_freed_memory sets glibc's malloc")
def test_configured_processes_reuse_the_memory_of_freed_activations():
    """By default a step's freed activations go back to the system and the next step faults their
    pages in again; a process set up by `configure_threads` reuses them."""
    faults = {}
    for mode in ("default", "configured"):
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{mode}: the probe failed: {out.stderr[-1000:]}"
        faults[mode] = int(out.stdout.split()[-1])
    assert faults["default"] > 10 * 1000, f"the default allocator took only {faults['default']} faults (probe broken?)"
    assert faults["configured"] < faults["default"] / 10, \
        f"a configured process took {faults['configured']} page faults in 10 steps, the default {faults['default']}"


def test_a_cpu_device_label_names_the_processor_and_the_threads():
    """Benchmarks print `device_label`: a timing is only comparable with one taken on the same
    kind of CPU, and the machines are lent on more than one."""
    import torch

    from nes.runtime import cpu_model, device_label

    model = cpu_model()
    assert model.strip(), "cpu_model() returned an empty name"
    label = device_label(torch.device("cpu"))
    assert model in label, f"device_label {label!r} does not name the processor {model!r}"
    assert f"{torch.get_num_threads()} threads" in label, f"device_label {label!r} does not give the thread count"


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/cpuinfo")
def test_cpu_model_is_the_model_name_of_proc_cpuinfo():
    from nes.runtime import cpu_model

    with open("/proc/cpuinfo", encoding="utf-8") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if not names:
        pytest.skip("this kernel's /proc/cpuinfo has no 'model name' line")
    assert cpu_model() == names[0], f"cpu_model() {cpu_model()!r} is not /proc/cpuinfo's {names[0]!r}"
