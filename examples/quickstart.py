"""Track one conversation and send it.

    python examples/quickstart.py

With AGENTSIGHT_API_KEY set this ships to your AgentSight account (AGENTSIGHT_API_ENDPOINT to override the URL).
Without it, a local AgentSight-compatible server is started on a free loopback port and the transcript it stored
is printed.
"""

from __future__ import annotations

import os
import tempfile

from agentsight_otel import tracker
from agentsight_otel.demo import format_transcript
from agentsight_otel.localserver import LocalServer


def main() -> None:
    server = None
    if not os.environ.get("AGENTSIGHT_API_KEY"):
        server = LocalServer().start()
        tracker.configure(api_key=server.api_key, endpoint=server.url)
        # The server lives only as long as this script: anything undelivered would wait for a port that is gone,
        # so the spool goes to a temporary directory instead of the user's state directory.
        os.environ.setdefault("AGENTSIGHT_SPOOL_DIR", tempfile.mkdtemp(prefix="agentsight-quickstart-"))

    tracker.get_or_create_conversation("quickstart-1", customer_id="customer-7", name="Password reset")
    tracker.track_human_message("I forgot my password.")
    tracker.track_action("send_reset_email", tools_used={"email": "user@example.invalid"}, response="sent")
    tracker.track_token_usage(prompt_tokens=95, completion_tokens=22, total_tokens=117, model="gpt-4o-mini")
    tracker.track_agent_message("I've sent you a reset link. It is valid for one hour.")
    tracker.track_button("feedback", "Helpful", "thumbs_up")
    result = tracker.send_tracked_data()
    print("delivered:", result["summary"])

    if server is not None:
        print(format_transcript(server.transcript("quickstart-1")))
        server.stop()


if __name__ == "__main__":
    main()
