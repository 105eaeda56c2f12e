"""`--plot`: throughput against size, one line per implementation and end-to-end client."""

from dm_env_rpc_fast.benchmark import codec_bench
from dm_env_rpc_fast.benchmark import e2e
from dm_env_rpc_fast.benchmark import impls


class PlotUnavailable(RuntimeError):
  pass


PLOT_HINT = 'matplotlib is needed for --plot: pip install "dm-env-rpc-fast[plot]"'


def check_plot_support() -> None:
  """Raises PlotUnavailable (with the install hint) when matplotlib does not import."""
  import importlib  # pylint: disable=import-outside-toplevel
  try:
    importlib.import_module("matplotlib")
  except ImportError as e:
    raise PlotUnavailable(f"{PLOT_HINT} ({e})") from None


_STYLE = {
    "native": ("tab:blue", "-", "o"), "pure": ("tab:green", "-", "s"),
    "upstream": ("tab:red", "-", "^"), "protobuf": ("tab:gray", ":", "x"),
    "memcpy": ("black", "--", None),
    "ceiling": ("black", "--", None), "raw_ours": ("tab:gray", ":", "x"),
    "raw_copy": ("tab:olive", ":", "+"),
    "fast": ("tab:blue", "-", "o"), "fast_zc": ("tab:cyan", "-", "D"),
    "shm_raw": ("tab:purple", ":", "x"), "shm_fast": ("tab:purple", "-", "o"),
    "shm_fast_zc": ("tab:pink", "-", "D"),
}
# The memcpy line of the end-to-end panel (the codec panels have their own).
_E2E_MEMCPY_STYLE = ("black", ":", None)


def write(path: str, codec_rows, cases, env) -> None:
  """Throughput against size, one line per implementation (and one per e2e client)."""
  check_plot_support()
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  kinds = list(dict.fromkeys(r.kind for r in codec_rows if not r.scalar))
  panels = [(op, kind) for op in codec_bench.OPS for kind in kinds
            if any(r.op == op and r.kind == kind for r in codec_rows)]
  ncols = max(1, len(kinds))
  nrows = (2 if panels else 0) + (1 if cases else 0)
  if not nrows:
    raise ValueError("nothing to plot: no array-sized codec cells and no end-to-end cases")
  fig = plt.figure(figsize=(3.2 * ncols + 1.5, 2.8 * nrows + 0.6), dpi=80)
  grid = fig.add_gridspec(nrows, ncols)
  for op_index, op in enumerate(codec_bench.OPS if panels else ()):
    for col, kind in enumerate(kinds):
      ax = fig.add_subplot(grid[op_index, col])
      rows = sorted((r for r in codec_rows if r.op == op and r.kind == kind and not r.scalar),
                    key=lambda r: r.nbytes)
      for impl in impls.IMPLS:
        points = [(r.nbytes, r.mb_per_s(impl)) for r in rows if r.mb_per_s(impl)]
        if points:
          color, style, marker = _STYLE[impl]
          ax.plot(*zip(*points), style, color=color, marker=marker, markersize=4, label=impl)
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_title(f"{op} {kind}", fontsize=9)
      ax.tick_params(labelsize=7)
      ax.grid(True, which="major", alpha=0.3)
      if col == 0:
        ax.set_ylabel("MB/s of array data", fontsize=8)
      if op_index == 1:
        ax.set_xlabel("array bytes", fontsize=8)

  if cases:
    ax = fig.add_subplot(grid[nrows - 1, :])
    ordered = sorted(cases, key=lambda c: c.response_bytes or 0)
    for name in e2e.CLIENTS:
      if name == "pingpong":
        continue  # moves no observation
      points = [(c.response_bytes, c.steps_per_s(name) * c.response_bytes / 1e6)
                for c in ordered if c.response_bytes and c.steps_per_s(name)]
      if points:
        color, style, marker = (_E2E_MEMCPY_STYLE if name == "memcpy"
                                else _STYLE.get(name, ("tab:red", "-", "^")))
        ax.plot(*zip(*points), style, color=color, marker=marker, markersize=4, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("end to end on one host, gRPC and shared memory (response MB/s = steps/s x "
                 "bytes/step)", fontsize=9)
    ax.set_xlabel("response bytes per step", fontsize=8)
    ax.set_ylabel("MB/s", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=len(e2e.CLIENTS) // 2)
  if panels:
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(labels), fontsize=7, frameon=False)
  fig.suptitle(f"dm-env-rpc-fast {env['dm_env_rpc_fast']} ({env['backend']}) vs dm-env-rpc "
               f"{env['dm_env_rpc'] or '(not installed)'}; {env['cpu']}, {env['cpu_count']} cores",
               fontsize=9, x=0.01, ha="left")
  fig.tight_layout(rect=(0, 0, 1, 0.97))
  fig.savefig(path, dpi=72)
  plt.close(fig)
  shrink_png(path)


def shrink_png(path: str) -> None:
  """Re-saves a PNG plot with a 64-colour palette (a quarter of the size, same look).

  Uses Pillow, which matplotlib depends on; leaves the file alone without it.
  """
  try:
    from PIL import Image  # pylint: disable=import-outside-toplevel
  except ImportError:
    return
  with Image.open(path) as image:
    small = image.convert("RGB").quantize(colors=64, method=0)  # 0: median cut
  small.save(path, optimize=True)
