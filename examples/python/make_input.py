"""Write a CSV of hourly energy readings for energy.py: python make_input.py HOMES HOURS > in.csv"""

import random
import sys

homes, hours = (int(arg) for arg in sys.argv[1:3]) if len(sys.argv) > 2 else (4, 24)
rng = random.Random(7)
print("home,hour,kwh,price_mc")
for home in range(homes):
    base = rng.uniform(0.2, 1.5)
    for hour in range(hours):
        kwh = base + 0.8 * (7 <= hour % 24 <= 9 or 18 <= hour % 24 <= 22) + rng.uniform(0, 0.3)
        price = 120 if 17 <= hour % 24 <= 21 else 80
        print(f"home{home},{hour},{kwh:.3f},{price}")
