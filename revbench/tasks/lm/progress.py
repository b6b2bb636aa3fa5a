"""The progress bar of a training run: tqdm when wanted and attached to a terminal, otherwise nothing."""
from __future__ import annotations


class Bar:
    """tqdm when wanted and attached to a terminal; otherwise nothing."""

    def __init__(self, total, initial, desc, enabled):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="seg", leave=False, dynamic_ncols=True)

    def update(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
