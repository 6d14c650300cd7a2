#!/usr/bin/env python3
"""Writes tests/fixtures/affinity/affinity.safetensors: TinyCLIP's loss
(ClipSoftLoss affinity mimicking + the optional hard ClipLoss, as the
original's train.py loss_fn combines them) on rank 1 of a 2-process global
batch, in PyTorch fp64 autograd, with the gradients of that rank's loss with
respect to every student feature of the global batch (gather-with-grad) and
to the student's log logit scale. Called by scripts/make_fixtures.py."""
import os

import torch
import torch.nn.functional as F

from fixtures_model import save_st  # safetensors with sorted metadata: reruns are byte-identical

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "affinity", "affinity.safetensors")

W, n, E, TE, RANK = 2, 6, 16, 24, 1
N = W * n


def soft_ce(student_logits, teacher_logits):
    # F.cross_entropy with a probability target, as ClipSoftLoss.single_loss_fn
    return F.cross_entropy(student_logits, teacher_logits.softmax(dim=-1))


def tinyclip_loss(fi, ft, gi, gt, log_s, s_t, alpha, weight):
    """rank RANK's loss: its n rows against all N columns"""
    s = log_s.exp()
    rows = slice(RANK * n, (RANK + 1) * n)
    s_i2t = s * fi[rows] @ ft.T
    s_t2i = s * ft[rows] @ fi.T
    t_i2t = s_t * gi[rows] @ gt.T
    t_t2i = s_t * gt[rows] @ gi.T
    w_soft = alpha * weight
    loss = 0.5 * w_soft * soft_ce(s_i2t, t_i2t) + 0.5 * w_soft * soft_ce(s_t2i, t_t2i)
    if alpha < 1.0:
        labels = torch.arange(n) + n * RANK  # ClipLoss with local_loss
        hard = (F.cross_entropy(s_i2t, labels) + F.cross_entropy(s_t2i, labels)) / 2
        loss = loss + hard * (1.0 - alpha) * weight
    return loss


def main():
    g = torch.Generator().manual_seed(1234)
    fi = F.normalize(torch.randn(N, E, generator=g, dtype=torch.float64), dim=-1).to(torch.float32)
    ft = F.normalize(torch.randn(N, E, generator=g, dtype=torch.float64), dim=-1).to(torch.float32)
    gi = F.normalize(torch.randn(N, TE, generator=g, dtype=torch.float64), dim=-1).to(torch.float32)
    gt = F.normalize(torch.randn(N, TE, generator=g, dtype=torch.float64), dim=-1).to(torch.float32)
    tensors = {"student_img": fi, "student_txt": ft, "teacher_img": gi, "teacher_txt": gt}
    meta = {"world_size": str(W), "rows": str(n), "rank": str(RANK),
            "torch": torch.__version__}
    # (alpha, weight, student log scale): the released recipe (affinity only,
    # both scales 50) and a mixed loss with another student scale
    cases = [(1.0, 1.0, torch.log(torch.tensor(50.0)).item()), (0.3, 2.0, 2.3)]
    s_t = 50.0
    for k, (alpha, weight, log_s0) in enumerate(cases):
        fi64 = fi.double().requires_grad_()
        ft64 = ft.double().requires_grad_()
        log_s = torch.tensor(log_s0, dtype=torch.float64, requires_grad=True)
        loss = tinyclip_loss(fi64, ft64, gi.double(), gt.double(), log_s, s_t, alpha, weight)
        loss.backward()
        tensors[f"case{k}.loss"] = loss.detach().float().reshape(1)
        tensors[f"case{k}.grad_img"] = fi64.grad.float()
        tensors[f"case{k}.grad_txt"] = ft64.grad.float()
        tensors[f"case{k}.grad_log_scale"] = log_s.grad.float().reshape(1)
        tensors[f"case{k}.log_scale"] = torch.tensor([log_s0], dtype=torch.float32)
        meta[f"case{k}.alpha"] = repr(alpha)
        meta[f"case{k}.weight"] = repr(weight)
    meta["teacher_logit_scale"] = repr(s_t)
    meta["cases"] = str(len(cases))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_st({k: v.contiguous() for k, v in tensors.items()}, OUT, meta)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
