#!/usr/bin/env python3
"""A job in Python, run by the runner's command mode: a monthly report.

Map the job kind to this script in the runner's configuration, e.g.

    RUNNER_COMMANDS='{"report": ["python3", "/app/examples/python/report.py"]}'

and submit {"kind": "report", "params": {"month": "2026-10", "regions": ["eu", "us"]}}.

The contract with the runner (nothing else to install):
  * the job's params arrive as JSON on stdin;
  * JOB_ID and JOB_ATTEMPT are in the environment;
  * stderr is the log; a line "PROGRESS <percent> <message>" reports progress;
  * the last line of stdout that is JSON is the result (other lines are fine);
  * exit 0 succeeds, exit 65 fails for good (bad params), anything else is retried.
"""

import json
import os
import re
import sys

EXIT_PERMANENT = 65


def log(message):
    print(message, file=sys.stderr, flush=True)


def progress(percent, message):
    log(f"PROGRESS {percent} {message}")


def total_for(month, region):
    """Stands in for a database query: a made-up, repeatable figure."""
    return sum(map(ord, month + region)) * 10


def main():
    try:
        params = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        log(f"params are not JSON: {e}")
        return EXIT_PERMANENT
    month = params.get("month") if isinstance(params, dict) else None
    if not isinstance(month, str) or not re.fullmatch(r"\d{4}-\d{2}", month):
        log(f'params.month must be a month like "2026-10", got {month!r}')
        return EXIT_PERMANENT
    regions = params.get("regions", ["eu", "us"])

    log(f"job {os.environ['JOB_ID']} attempt {os.environ['JOB_ATTEMPT']}: report for {month}")
    totals = {}
    for done, region in enumerate(regions, start=1):
        totals[region] = total_for(month, region)
        progress(done * 100 // len(regions), f"summed {region}")
    print(f"summed {len(regions)} regions")  # not JSON: logged, not the result
    print(json.dumps({"month": month, "totals": totals, "total": sum(totals.values())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
