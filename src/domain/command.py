"""The plugin command line, as pfcon builds it (docs/wire-contract.md §6.1)."""

from __future__ import annotations

from collections.abc import Sequence

from .model import INPUT_DIR, OUTPUT_DIR, JobSpec, PluginType


def localize_path_args(args: Sequence[str], path_flags: Sequence[str], input_dir: str = INPUT_DIR) -> list[str]:
    """Replace the value following each flag of ``path_flags`` by ``input_dir``."""
    flags = set(path_flags)
    out: list[str] = []
    i = 0
    while i < len(args):
        out.append(args[i])
        if args[i] in flags:
            out.append(input_dir)
            i += 1  # skip the original value (if any)
        i += 1
    return out


def build_command(spec: JobSpec) -> tuple[str, ...]:
    cmd = [*spec.entrypoint, *localize_path_args(spec.args, spec.args_path_flags)]
    if spec.type is PluginType.DS:
        cmd.append(INPUT_DIR)
    cmd.append(OUTPUT_DIR)
    return tuple(cmd)
