"""`helm test`'s check, run by the operator image's python: the operator answers on its metrics Service and one
replica leads. The Service may send each request to any replica, and a replica that waits for the Lease says
`flopwise_leader 0`, so it asks again until one says 1 or the time is up. No dependency beyond the standard library.

Environment: FLOPWISE_METRICS_URL (the Service's /metrics), FLOPWISE_TEST_TIMEOUT_SECONDS (default 120).
"""

import os
import re
import sys
import time
import urllib.error
import urllib.request

URL = os.environ["FLOPWISE_METRICS_URL"]
DEADLINE = time.monotonic() + float(os.environ.get("FLOPWISE_TEST_TIMEOUT_SECONDS", "120"))
LEADER = re.compile(r"^flopwise_leader(?:\{\})? (\S+)$", re.MULTILINE)
CAMPAIGNS = re.compile(r'^flopwise_campaign_phase\{.*\} 1\.0$', re.MULTILINE)


def main() -> int:
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(URL, timeout=10) as response:
                text = response.read().decode()
            found = LEADER.search(text)
            if found is None:
                print(f"FAIL: {URL} answers, but without flopwise_leader: is it the flopwise operator?")
                return 1
            if float(found.group(1)) == 1.0:
                print(f"ok: {URL} answers; this replica leads and exports {len(CAMPAIGNS.findall(text))} "
                      "campaign(s)")
                return 0
            last = "the replica that answered waits for the leader Lease (flopwise_leader 0)"
        except (urllib.error.URLError, OSError) as error:
            last = f"{URL}: {error}"
        if time.monotonic() >= DEADLINE:
            print(f"FAIL: no leading operator replica answered in time; last: {last}")
            return 1
        time.sleep(1)


sys.exit(main())
