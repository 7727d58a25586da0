# tests/openmetrics.py - parse OpenMetrics text on stdin with
# prometheus_client's parser (Debian's python3-prometheus-client), which
# refuses anything the format does not allow; print what it found
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = list(text_string_to_metric_families(sys.stdin.read()))
histograms = sum(1 for f in families if f.type == "histogram")
print(f"{len(families)} families, {histograms} histogram")
