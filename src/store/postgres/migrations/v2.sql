-- v2. `GET /sessions?conversation=ID` reads one conversation's sessions in the list's order.
CREATE INDEX aop_sessions_conversation ON aop_sessions (conversation, last_seen_us DESC, id DESC) WHERE conversation IS NOT NULL;
