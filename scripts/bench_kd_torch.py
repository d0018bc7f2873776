#!/usr/bin/env python3
"""The knowledge-distillation step of tests/bench_kd.c in PyTorch, for the comparison table of
scripts/device_check.sh (and a CPU smoke test here).

  bench_kd_torch.py --device cpu|cuda:0 --teacher WRN-40-2 --student WRN-16-2
                    [--batch 128] [--classes 100] [--channels 3] [--size 32]
                    [--iters 20] [--warmup 5] [--threads T] [--temperature 4] [--alpha 0.9]
                    [--mode fp32|bf16|both] [--no-cudnn-benchmark]

The nets are those of scripts/gen_wrn.py, layer for layer: pre-activation WRN-depth-k, a 3x3 stem
convolution to 16 channels, three groups of (depth - 4) / 6 blocks of widths 16k, 32k, 64k (the
first block of groups 2 and 3 with stride 2), each block BN-ReLU -> conv3x3 (stride) -> BN-ReLU ->
conv3x3, plus a shortcut that is the block's input, or a 1x1 convolution (stride) of its
pre-activation where the shape changes; then BN-ReLU, global average pooling and a linear layer
with bias. Convolutions have no bias; BatchNorm2d has its affine part (Caffe's BatchNorm + Scale),
eps 1e-5, momentum 0.1 (gen_wrn.py's moving_average_fraction 0.9).

One step: the teacher's forward in eval mode under torch.no_grad(), then the student's forward,
loss = (1 - alpha) * CE(student, label) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
(batch mean), backward, SGD (lr 0.01, momentum 0.9, weight decay 5e-4). The data (fixed random
images, labels i mod classes) is on the device before the loop; on CUDA the clock is read after
torch.cuda.synchronize(). Modes: fp32 (eager, TF32 off for matmul and cuDNN) and bf16
(channels_last memory format for nets and data, torch.autocast bfloat16 for both forwards; the
loss in float32). Reported per mode: the median step over --iters after --warmup steps, images/s
and, timed separately afterwards, the teacher's forward alone; the last line per mode is
"RESULT teacher=... student=... device=... batch=... ms=... img_s=... teacher_ms=... mode=...".

--teacher none times the student's training step alone (cross entropy only, no teacher):
teacher=none teacher_ms=0 in the RESULT line, as tests/bench_kd.c --teacher none.

Runs with PyTorch 1.13 (Debian's python3-torch: /usr/bin/python3 here) and 2.x.
"""
import argparse
import math
import re
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """One pre-activation block of gen_wrn.py: g<G>_b<B>."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5, momentum=0.1)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.proj = nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if (cin != cout or stride != 1) else None

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return y + (self.proj(pre) if self.proj is not None else x)


class WRN(nn.Module):
    def __init__(self, depth, k, classes, channels):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError("depth must be 6n+4")
        n = (depth - 4) // 6
        w = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(channels, w[0], 3, 1, 1, bias=False)
        blocks = []
        for g in range(3):
            for b in range(n):
                blocks.append(Block(w[g] if b == 0 else w[g + 1], w[g + 1], 2 if (g > 0 and b == 0) else 1))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(w[3], eps=1e-5, momentum=0.1)
        self.fc = nn.Linear(w[3], classes)
        for m in self.modules():  # gen_wrn.py's fillers: msra weights, fc bias 0
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.blocks(self.conv1(x))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def parse_wrn(name):
    m = re.fullmatch(r"(?:WRN-)?(\d+)-(\d+)", name)
    if not m:
        sys.exit("bench_kd_torch.py: a net is WRN-depth-width (e.g. WRN-16-2), got %r" % name)
    return int(m.group(1)), int(m.group(2))


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_mode(a, dev, mode):
    torch.manual_seed(0)
    alone = a.teacher == "none"
    sd, sk = parse_wrn(a.student)
    teacher = None
    if not alone:
        td, tk = parse_wrn(a.teacher)
        teacher = WRN(td, tk, a.classes, a.channels).to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student = WRN(sd, sk, a.classes, a.channels).to(dev).train()
    g = torch.Generator().manual_seed(12345)
    x = (torch.rand(a.batch, a.channels, a.size, a.size, generator=g) * 2 - 1).to(dev)
    y = (torch.arange(a.batch) % a.classes).to(dev)
    bf16 = mode == "bf16"
    if bf16:
        if teacher is not None:
            teacher = teacher.to(memory_format=torch.channels_last)
        student = student.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    T, alpha = a.temperature, a.alpha

    def autocast():
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16)

    def step():
        if alone:
            opt.zero_grad(set_to_none=True)
            with autocast():
                s_logits = student(x)
            ce = F.cross_entropy(s_logits.float(), y)
            ce.backward()
            opt.step()
            return ce, torch.zeros(())
        with torch.no_grad(), autocast():
            t_logits = teacher(x)
        opt.zero_grad(set_to_none=True)
        with autocast():
            s_logits = student(x)
        s32, t32 = s_logits.float(), t_logits.float()
        ce = F.cross_entropy(s32, y)
        kd = F.kl_div(F.log_softmax(s32 / T, dim=1), F.softmax(t32 / T, dim=1), reduction="batchmean") * (T * T)
        loss = (1 - alpha) * ce + alpha * kd
        loss.backward()
        opt.step()
        return ce, kd

    times = []
    ce0 = kd0 = None
    for i in range(a.warmup + a.iters):
        sync(dev)
        t = time.perf_counter()
        ce, kd = step()
        sync(dev)
        times.append(time.perf_counter() - t)
        if i == 0:
            ce0, kd0 = ce.item(), kd.item()
    ce1, kd1 = ce.item(), kd.item()
    tt = []
    for _ in range(a.iters if not alone else 0):
        sync(dev)
        t = time.perf_counter()
        with torch.no_grad(), autocast():
            teacher(x)
        sync(dev)
        tt.append(time.perf_counter() - t)
    ms = statistics.median(times[a.warmup:]) * 1e3
    tms = statistics.median(tt) * 1e3 if tt else 0.0
    label = "fp32" if not bf16 else "bf16_cl"
    print("\nKD step %s -> %s on %s, PyTorch %s: batch %d, %d classes, T %g, alpha %g"
          % (a.teacher, a.student, a.device, label, a.batch, a.classes, T, alpha))
    print("  losses: first step CE %.4f KD %.4f; last step CE %.4f KD %.4f" % (ce0, kd0, ce1, kd1))
    tl = times[a.warmup:]
    print("  step: median %.2f ms over %d (min %.2f, max %.2f), %d warm-up; teacher forward alone %.2f ms"
          % (ms, a.iters, min(tl) * 1e3, max(tl) * 1e3, a.warmup, tms))
    if not (math.isfinite(ce1) and math.isfinite(kd1)):
        print("bench_kd_torch.py: the losses are not finite", file=sys.stderr)
        return False
    print("RESULT teacher=%s student=%s device=%s batch=%d ms=%.2f img_s=%.2f teacher_ms=%.2f mode=%s impl=pytorch"
          % (a.teacher, a.student, a.device, a.batch, ms, a.batch * 1e3 / ms, tms, label))
    sys.stdout.flush()
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N")
    ap.add_argument("--teacher", default="WRN-40-2")
    ap.add_argument("--student", default="WRN-16-2")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--mode", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--no-cudnn-benchmark", action="store_true",
                    help="leave torch.backends.cudnn.benchmark off (it is on by default here: fixed shapes)")
    a = ap.parse_args()
    if a.iters < 1 or a.warmup < 0:
        sys.exit("bench_kd_torch.py: --iters >= 1 and --warmup >= 0")
    dev = torch.device(a.device)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    # FP32 means FP32: no TF32 anywhere (the bf16 mode computes its convolutions in bf16 anyway)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    where = "CPU, %d threads" % torch.get_num_threads()
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("bench_kd_torch.py: %s: torch.cuda.is_available() is False" % a.device)
        torch.backends.cudnn.benchmark = not a.no_cudnn_benchmark
        torch.cuda.set_device(dev)
        where = "%s, CUDA %s, cuDNN %s, cudnn.benchmark %s" % (torch.cuda.get_device_name(dev), torch.version.cuda,
                                                              torch.backends.cudnn.version(),
                                                              torch.backends.cudnn.benchmark)
    print("PyTorch %s on %s; TF32 off (matmul, cuDNN)" % (torch.__version__, where))
    ok = True
    for mode in (["fp32", "bf16"] if a.mode == "both" else [a.mode]):
        ok = run_mode(a, dev, mode) and ok
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
