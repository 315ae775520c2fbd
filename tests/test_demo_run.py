"""The pieces the scenario demos share: stage timings and the terminal summary."""

import io

from rich.console import Console

from obliviate.scenarios.demo_run import Laps, before_after_table, format_cell, print_targets


def test_laps_times_each_stage_into_one_dict_and_logs_it():
    lines = []
    laps = Laps(lines.append)
    timings = laps.timings  # the summary holds this dict; a later stage must still land in it
    laps.start()
    laps.lap("data")
    laps.lap("report")
    assert list(timings) == ["data", "report"] and laps.timings is timings
    assert lines == [f"  data: {timings['data']} s", f"  report: {timings['report']} s"]
    assert laps.total() >= 0 and isinstance(laps.total(), float)


def test_cells_targets_and_table_read_as_before():
    assert [format_cell(v) for v in (None, 0.5, 3, "met")] == ["—", "0.500", "3", "met"]
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    print_targets(console, {"a <= 1": True, "b >= 2": False})
    console.print(before_after_table("t", [{"metric": "rate", "split": "forget", "before": 0.25, "after": None,
                                            "note": "n"}]))
    text = out.getvalue()
    assert "  met  a <= 1\n  missed  b >= 2\n" in text
    assert "0.250" in text and "—" in text and "rate" in text
