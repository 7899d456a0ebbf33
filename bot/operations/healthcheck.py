"""`python -m bot.operations.healthcheck`: exit 0 when the bot's /healthz says healthy.

The Docker image's HEALTHCHECK runs it.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("METRICS_PORT", "9100")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as error:  # 503: unhealthy, with the reason in the body
        print(error.read().decode(), file=sys.stderr)
    except OSError as error:
        print(f"no answer on port {port}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
