"""Named presets over a script's argparse defaults, the one rule every script follows: an option given on the
command line always wins; an option left out takes its value from the last preset that applies and sets it
(`--tiny`, `--reward_model`, `--preset gpu` ...), else its plain default. Each script lists its defaults and
presets at its top; `--help` ends with what each preset sets, and the run header says which values differ from
the plain defaults and who set them.

    TINY = dict(batch_size=128, learning_rate=3e-4, model_name=Lazy("the tiny GPT-2", build_tiny_gpt2))
    PRESETS = [Preset("--tiny", lambda args: args.tiny, TINY)]
    args = parse_with_presets(parser, argv, PRESETS, check=check_options)
    print(settings_line(args))   # "settings from --tiny: batch_size 128, ..." and "settings from the command line: ..."
"""
import argparse
import textwrap
from typing import Callable, NamedTuple, Union

from utils.device import check_precision
from utils.options import check_tracker_installed

COMMAND_LINE = "the command line"
WIDTH = 118


class Lazy:
    """A preset value computed only when it is used (the tiny models' paths: built on first use); `label` stands
    for it in --help and the run header."""

    def __init__(self, label, compute):
        self.label, self.compute = label, compute

    def __str__(self):
        return self.label


class Preset(NamedTuple):
    name: str  # how a user turns it on: "--tiny", "--reward_model", "--preset gpu"
    applies: Callable  # parsed arguments -> bool
    values: Union[dict, Callable]  # {option: value}, or arguments -> such a dict (values derived from others)
    note: str = ""  # --help's description of a preset whose values are derived


def parse_with_presets(parser, argv, presets, check=None):
    """Parse `argv` by the rule above. `check(args)`, if given, checks options against each other (UserError) once
    they are all known and before any `Lazy` value (a tiny model) is computed. A preset's string value goes through
    its option's `type=` check, as argparse treats a string default. `args.sources` maps each option whose value
    differs from its plain default to what set it: a preset's name or "the command line"."""
    parser.epilog = "\n".join(filter(None, [parser.epilog, describe(presets)]))
    first = parser.parse_args(argv)
    given = options_given(parser, argv, vars(first))
    # before any preset builds or loads a model
    check_tracker_installed(getattr(first, "report_to", None))
    check_precision(getattr(first, "mixed_precision", None), getattr(first, "fsdp", False))
    chosen, sources = {}, {}
    view = argparse.Namespace(**vars(first))  # what each preset sees: the plain defaults and the earlier presets
    for preset in presets:
        if not preset.applies(view):
            continue
        values = preset.values(view) if callable(preset.values) else preset.values
        for key, value in values.items():
            if key not in given:
                chosen[key], sources[key] = value, preset.name
                setattr(view, key, value)
    plain = {key: parser.get_default(key) for key in vars(first)}
    parser.set_defaults(**{key: value for key, value in chosen.items() if not isinstance(value, Lazy)})
    try:
        args = parser.parse_args(argv)
    finally:
        parser.set_defaults(**plain)  # the parser as it came, for --help elsewhere (tests build it twice)
    lazy = {key: value for key, value in chosen.items() if isinstance(value, Lazy)}
    changed = [key for key in chosen if key in lazy or getattr(args, key) != plain[key]]
    args.sources = {key: sources[key] for preset in presets for key in changed if sources[key] == preset.name}
    args.sources.update({key: COMMAND_LINE for key in sorted(given) if getattr(args, key) != plain[key]})
    for key, value in lazy.items():
        setattr(args, key, value)  # the label, until computed
    if check:
        check(args)
    for key, value in lazy.items():
        setattr(args, key, value.compute())
    return args


def options_given(parser, argv, dests):
    """The destinations of the options given in `argv` (argparse fills in a default only where the namespace has
    no value yet: what keeps the marker was not given)."""
    unset = object()
    marked = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(dests, unset)))
    return {key for key, value in vars(marked).items() if value is not unset}


def describe(presets):
    """--help's closing lines: what each preset sets."""
    if not presets:
        return ""
    lines = ["presets (an option given on the command line always wins):"]
    for preset in presets:
        settings = preset.note if callable(preset.values) else \
            ", ".join(f"--{key} {value}" for key, value in preset.values.items())
        lines.append(textwrap.fill(f"{preset.name}: {settings}", WIDTH, initial_indent="  ", subsequent_indent="    "))
    return "\n".join(lines)


def settings_line(args):
    """The run header's lines of the values that differ from the plain defaults, grouped by what set them (the
    presets in their order, then the command line)."""
    by_source = {}
    for key, source in getattr(args, "sources", {}).items():
        by_source.setdefault(source, []).append(f"{key} {shown(getattr(args, key))}")
    if not by_source:
        return "settings: the plain defaults"
    return "\n".join(textwrap.fill(f"settings from {source}: " + ", ".join(sorted(values)), WIDTH,
                                   subsequent_indent="  ") for source, values in by_source.items())


def shown(value):
    return "off" if value == float("inf") else str(value)
