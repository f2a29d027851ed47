//! `POST /hooks/claude-code`: Claude Code's hook events (`GUARD.md`, "Agent hooks").
//!
//! Each event is recorded in the session of its `session_id` (`crate::hooks` says as what); a
//! `PreToolUse` is first put to the guard, and its answer given in Claude Code's form. Whatever
//! happens inside, the answer leaves within [`DEADLINE`]: past it, or on any failure, `{}`, which
//! lets Claude Code go on as its own settings say (fail open). Only a malformed body is refused.

use super::error::ApiError;
use super::events::form;
use super::guard::{answer, read, store_now, Who};
use super::state::AppState;
use crate::guard::{Call, Decision};
use crate::hooks::{pre_tool_use_output, Hook, AGENT};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The longest a hook waits for its answer: Claude Code waits on it before every tool call.
const DEADLINE: Duration = Duration::from_millis(100);

pub(crate) async fn claude_code(
    State(app): State<AppState>,
    headers: HeaderMap,
    req: Body,
) -> Result<Response, ApiError> {
    form(&headers)?;
    let bytes = read(&app, &headers, req).await?;
    let hook = Hook::parse(&bytes).map_err(ApiError::BadRequest)?;
    let output = match tokio::time::timeout(DEADLINE, handle(&app, hook)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a Claude Code hook could not be handled; answered {{}} (fail open)");
            json!({})
        }
        Err(_) => {
            tracing::warn!(
                "a Claude Code hook took longer than {} ms; answered {{}} (fail open)",
                DEADLINE.as_millis()
            );
            json!({})
        }
    };
    Ok(Json(output).into_response())
}

async fn handle(app: &AppState, hook: Hook) -> Result<Value, ApiError> {
    let session = hook.session();
    app.hooked.mark(&session);
    let mut output = json!({});
    if let Some((tool, input)) = hook.tool_call() {
        let call =
            Call { session_id: session.clone(), agent_id: Some(AGENT.into()), tool: tool.into(), input: input.clone() };
        let answer = answer(app, &call).await?;
        output = pre_tool_use_output(&answer);
        if answer.decision != Decision::Allow {
            // The call will not run (or not without a person's word): the guard recorded why.
            return Ok(output);
        }
    }
    // Recorded after the answer: the agent is not kept waiting on a commit.
    let records = hook.records();
    let who = Who { agent: AGENT.into(), parent: hook.subagent.as_ref().map(|_| hook.session_id.clone()) };
    let store = Arc::clone(&app.store);
    tokio::spawn(async move {
        for (kind, payload) in records {
            if let Err(e) = store_now(store.as_ref(), &session, &who, kind, &payload).await {
                tracing::warn!(error = %e, kind, "could not record a Claude Code hook event");
            }
        }
    });
    Ok(output)
}
