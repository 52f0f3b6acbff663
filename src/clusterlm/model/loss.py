"""Output projection fused with cross-entropy: the training loss without the full logits tensor.

The plain path, `F.cross_entropy(output(h), targets)`, writes an (N, V) logits tensor, reads
and writes it again for log-softmax, and in backward zero-fills an (N, V) gradient and makes
two more passes over it — for a small model with an 8k vocabulary that memory traffic costs
more than the transformer blocks' elementwise work. Here the rows are processed in chunks
whose logits stay in cache: each chunk's logits become softmax − one-hot (the gradient of
cross-entropy w.r.t. the logits) in place and are immediately multiplied into the gradients
of the hidden states and of the output weight. Matmul FLOPs are the same as the plain path;
the gradients are computed during the forward pass and scaled in backward.

The result equals `F.cross_entropy(h @ weight.T, targets)` (mean over rows) up to float
rounding. The weight must be a plain tensor (not sharded by tensor parallelism).
"""

from __future__ import annotations

import torch


def _rows_per_chunk(vocab_size: int) -> int:
    # ~2M logits (8 MB in fp32) per chunk: large enough for efficient GEMMs, small enough to
    # stay in the L2/L3 caches of a CPU or the L2 of a GPU.
    return max(128, (1 << 21) // vocab_size)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        N = hidden.shape[0]
        # Matmuls run in the autocast dtype when autocast is on (bf16 on GPUs), else in the
        # input dtype; autocast itself is switched off so the explicit casts below hold.
        device_type = hidden.device.type
        autocast_on = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast_on else hidden.dtype
        grad_hidden = torch.empty_like(hidden)  # (N, C)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)  # (V, C)
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = _rows_per_chunk(weight.shape[0])
        with torch.autocast(device_type, enabled=False):
            w = weight.to(dtype)
            for start in range(0, N, rows):
                h = hidden[start:start + rows].to(dtype)  # (n, C)
                t = targets[start:start + rows]  # (n,)
                logits = (h @ w.t()).float()  # (n, V), fp32 for a stable log-sum-exp
                # Softmax in place with one exp pass (logsumexp + a second exp would take two):
                # row loss = log Σ exp(l − max) + max − l_target.
                target_logit = logits.gather(1, t[:, None])  # (n, 1)
                row_max = logits.amax(dim=-1, keepdim=True)  # (n, 1)
                probs = logits.sub_(row_max).exp_()  # unnormalised
                row_sum = probs.sum(dim=-1, keepdim=True)  # (n, 1)
                loss_sum += (row_sum.log() + row_max - target_logit).sum()
                probs.div_(row_sum)  # softmax
                probs[torch.arange(t.shape[0], device=t.device), t] -= 1.0  # dloss/dlogits (unscaled)
                if dtype == torch.float32 and hidden.dtype == torch.float32:
                    torch.mm(probs, w, out=grad_hidden[start:start + rows])  # (n, C), no temporary
                    grad_weight.addmm_(probs.t(), h)  # (V, C) accumulated in place
                else:
                    probs = probs.to(dtype)
                    grad_hidden[start:start + rows] = probs @ w
                    grad_weight += (probs.t() @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss_sum / N

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_loss / grad_hidden.shape[0]  # d(mean)/d(row loss) times upstream gradient
        return (grad_hidden * scale.to(grad_hidden.dtype),
                (grad_weight * scale).to(ctx.weight_dtype), None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `targets`; hidden (N, C), weight (V, C), targets (N,)."""
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        # Evaluation: no gradients to fuse, so only the chunking (memory) benefit is kept.
        total = hidden.new_zeros((), dtype=torch.float32)
        rows = _rows_per_chunk(weight.shape[0])
        for start in range(0, hidden.shape[0], rows):
            logits = (hidden[start:start + rows] @ weight.to(hidden.dtype).t()).float()
            total += torch.nn.functional.cross_entropy(logits, targets[start:start + rows], reduction="sum")
        return total / hidden.shape[0]
    return _LinearCrossEntropy.apply(hidden, weight, targets)
