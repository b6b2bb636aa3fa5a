"""`revbench gpu-check`: every GPU path of revbench on this machine's GPU, in one short run with a time budget.

Modules: ``environment`` (the GPU, driver, CUDA, cuDNN, torch and NVML versions), ``calibration`` (known tensors
seen by every meter; the CUDA context's own cost), ``cases`` (what is run, most valuable first), ``budget`` (when
to stop starting cases), ``runner`` (one case -> one pytest-benchmark entry, timed with CUDA synchronisation),
``snapshot`` (allocator timelines for PyTorch's memory viewer), ``writer`` (the output folder and its limits),
``check`` (the whole run). Nothing here needs the project's optional dependencies (checkpoint-schedules, tqdm,
jinja2, hypothesis, sacremoses, sacrebleu): a stock GPU image with torch, pandas, seaborn, pytest-benchmark and
nvidia-ml-py runs it after ``pip install --no-deps -e .``.
"""
