
¨¥q	@‚L_;¬}*
claude_code.api_request2

session.id

085f8b352

event.name
api_request2
input_tokens
120	€Ä[_;¬}J[ÿ÷˜Òi¶3?ÆRîá›~ÃÁ±tb	exception