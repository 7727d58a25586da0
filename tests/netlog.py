# tests/netlog.py - the requests in a chromium --log-net-log file that a
# page made (their network isolation key or site for cookies is the
# page's, file://), one URL a line; the browser's own (its component
# updater, its clock) have none and are left out: the test runs chromium
# in a network namespace without a route, where they fail at once
import json
import sys

log = json.load(open(sys.argv[1]))
names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
for e in log["events"]:
    p = e.get("params", {})
    if names.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in p and (
            "file://" in p.get("network_isolation_key", "")
            or "file://" in p.get("site_for_cookies", "")):
        print(p["url"])
