#!/usr/bin/env python3
"""The threshold-alert rule's logic, independently: reads "<device> <reading>" lines
(in publish order, per device) on stdin and prints the alerts the rule must publish,
one "<device> <previous> <current>" line each, in the same order per device.

A reading alerts when there was a previous reading and |current - previous| is more
than 10% of |previous|. Readings are compared exactly, as decimals.
"""
import sys
from decimal import Decimal

last = {}
for line in sys.stdin:
    device, text = line.split()
    current = Decimal(text)
    previous = last.get(device)
    if previous is not None and abs(current - previous[0]) * 10 > abs(previous[0]):
        print(device, previous[1], text)
    last[device] = (current, text)
