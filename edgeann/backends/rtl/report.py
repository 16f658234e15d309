"""The RTL back end's section of report.json: resources (synthesized beside alkaid's estimate) and latency."""

from __future__ import annotations


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def backend_section(manifest: dict, synthesis: dict | None) -> dict:
    """``resources``: Yosys's cell counts when synthesized (else alkaid's estimate), the estimate beside them;
    ``latency``: cycles, ns at the clock period, initiation interval, pipeline stages."""
    est = manifest["estimate"]
    estimate = {"lut": est["lut"], "ff": est["ff"], "dsp": est["dsp"], "lut_two_input_adders": est["lut_two_input_adders"],
                "lut_single_output": est.get("lut_single_output"),
                "tool": manifest["generator"]["tool"], "version": manifest["generator"]["version"]}
    if synthesis is not None:
        resources = {key: synthesis[key] for key in ("lut", "ff", "dsp", "bram", "carry", "srl", "cells", "tool",
                                                      "version", "family", "seconds", "log")}
        resources.update(source="synthesized", estimate=estimate,
                         lut_over_estimate=_ratio(synthesis["lut"], est["lut"]),
                         lut_over_two_input_adder_estimate=_ratio(synthesis["lut"], est["lut_two_input_adders"]),
                         lut_over_single_output_estimate=_ratio(synthesis["lut"], est.get("lut_single_output", 0)),
                         ff_over_estimate=_ratio(synthesis["ff"], est["ff"]))
    else:
        resources = {"lut": est["lut"], "ff": est["ff"], "dsp": est["dsp"], "bram": 0, "carry": None, "cells": {},
                     "source": "estimate (synthesis skipped)", "tool": estimate["tool"], "version": estimate["version"],
                     "estimate": estimate}
    clock = manifest["options"]["clock_period"]
    return {
        "generator": manifest["generator"],
        "top_module": manifest["top_module"],
        "resources": resources,
        "latency": {
            "cycles": est["latency_cycles"],
            "ns": round(est["latency_cycles"] * clock, 3),
            "clock_period_ns": clock,
            "initiation_interval": est["initiation_interval"],
            "pipeline_stages": est["pipeline_stages"],
            "stage_delay_ns": manifest["options"]["latency_cutoff"],
            "logic_delay_ns": est["logic_delay_ns"],
        },
    }


def one_line(name: str, section: dict) -> str:
    r, lat = section["resources"], section["latency"]
    where = (f"Yosys; alkaid estimate LUT {r['estimate']['lut']}, FF {r['estimate']['ff']}" if r["source"] == "synthesized"
             else "alkaid estimate, synthesis skipped")
    return (f"{name} RTL: LUT {r['lut']}, FF {r['ff']}, DSP {r['dsp']} ({where}); latency {lat['cycles']} cycles = "
            f"{lat['ns']:g} ns at {lat['clock_period_ns']:g} ns, II {lat['initiation_interval']}")
