"""Result files and what is made from them.

- `job_files`: what one job writes (samples, summary, images, stats, status) and how a
  sweep reads its jobs' status back.
- `reading`: the job directories under some folders, their rows and configs.
- `tables`: paper-style tables (`bench table`).
- `paper`: our numbers beside the study's reported ones (`--vs`).
- `plots`: robustness curves, purifier cost, the qualitative grid (`bench plot|grid`).

Nothing here imports torch except what reads images back for `bench grid`.
"""
