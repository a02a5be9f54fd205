"""Many real nodes on one machine, scenarios, reports, and the discrete-event simulator."""
