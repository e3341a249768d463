"""In-process test doubles for the agent: the fake engine and the recording publisher.

Shipped in the wheel so that users can test against them; the service stack lives in
`devtools/cua_dev` (development only).
"""
