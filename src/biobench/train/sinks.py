"""Where training metrics go: JSON lines always, TensorBoard and Weights & Biases when installed and asked for.

`Metrics.log(row)` writes one JSON line to RUN/metrics.jsonl and the row's numeric values (nested dicts
flattened to `a/b`) as scalars at `row["step"]`:

- TensorBoard (`torch.utils.tensorboard.SummaryWriter` into RUN/tensorboard/) when `tensorboard` imports and
  `tensorboard = true` (the default: present = used; absent = a one-line notice, never an error);
- W&B (`wandb.init(mode=..., dir=RUN, project=..., config=...)`, `wandb.log(scalars, step=step)`) only when
  `wandb_project` is set; `wandb` is not a dependency, and its mode defaults to "offline" (sync later with
  `wandb sync RUN/wandb/...`). Asked for but not installed is an error that says how to install it.

Only rank 0 builds a `Metrics`; the other ranks log nothing.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from biobench.errors import ConfigError

logger = logging.getLogger("biobench.train")


def flatten(row: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of `row` as {'a/b': value} (bools and strings left out; 'step' is the x axis, not a scalar)."""
    out: dict[str, float] = {}
    for k, v in row.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, f"{name}/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and name != "step" and math.isfinite(v):
            out[name] = float(v)
    return out


def check(wandb_project: str | None) -> None:
    """A ConfigError when W&B is asked for but `wandb` is not installed (checked on every rank before training)."""
    if not wandb_project:
        return
    try:
        import wandb  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"wandb_project = {wandb_project!r} asks for W&B logging, but `wandb` is not installed. `pip install wandb`, or leave wandb_project unset."
        ) from err


class Metrics:
    """JSON lines + optional TensorBoard / W&B for one run directory (rank 0)."""

    def __init__(
        self,
        out: Path,
        *,
        resume_step: int = 0,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        wandb_mode: str = "offline",
        run_name: str | None = None,
        config: dict | None = None,
    ):
        self.path = Path(out) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        kept = [ln for ln in lines if json.loads(ln)["step"] <= resume_step]
        self.path.write_text("".join(ln + "\n" for ln in kept))  # steps after the checkpoint are redone
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # torch raises ImportError when the tensorboard package is absent
                logger.info("TensorBoard logging off: `pip install tensorboard` to get RUN/tensorboard/ event files.")
            else:
                # purge_step drops events a crashed run wrote after the checkpoint it resumes from
                self.tb = SummaryWriter(str(Path(out) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        self.wandb = None
        if wandb_project:
            check(wandb_project)
            import wandb

            self.wandb = wandb
            self.wandb_run = wandb.init(
                project=wandb_project, mode=wandb_mode, dir=str(out), name=run_name, config=config or {}, resume="allow"
            )

    def log(self, row: dict) -> None:
        """One metrics row (must hold 'step')."""
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        scalars = flatten(row)
        step = int(row["step"])
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
