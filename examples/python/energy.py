"""A Python job with numpy and pandas: summarise a CSV of hourly energy readings per home.

Input (stdin): CSV with columns home,hour,kwh,price_mc (see energy.csv; make_input.py writes
larger ones). Output (stdout): per home its total kWh, its cost, its peak hour and a least-squares
trend of kWh per hour, as CSV, then a line with numpy's and pandas' versions.

    hearth job run --local examples/python/energy.py --input examples/python/energy.csv \
        --output summary.csv
"""

import io
import sys

import numpy as np
import pandas as pd

readings = pd.read_csv(io.BytesIO(sys.stdin.buffer.read()))
readings["cost_mc"] = readings["kwh"] * readings["price_mc"]


def summarise(group):
    slope = np.polyfit(group["hour"].to_numpy(float), group["kwh"].to_numpy(float), 1)[0]
    return pd.Series(
        {
            "kwh": round(group["kwh"].sum(), 3),
            "cost_mc": round(group["cost_mc"].sum(), 1),
            "peak_hour": int(group.loc[group["kwh"].idxmax(), "hour"]),
            "trend_kwh_per_h": round(float(slope), 5),
        }
    )


summary = readings.groupby("home")[["hour", "kwh", "cost_mc"]].apply(summarise)
summary = summary.astype({"peak_hour": int})
sys.stdout.write(summary.to_csv())
print(f"numpy {np.__version__} pandas {pd.__version__}")
