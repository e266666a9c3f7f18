"""Fakes of the remote services mwai talks to (Jira, GitHub, the model APIs), on
127.0.0.1, held to the real APIs' shapes; the demo and the tests use them."""
