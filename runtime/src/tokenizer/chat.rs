//! Chat formats: turning a conversation into the prompt text a model was trained on.
//!
//! kiln does not run Jinja. It recognizes the formats of the models it runs from their
//! `tokenizer.chat_template` and renders them directly:
//! - ChatML (`<|im_start|>role\n...<|im_end|>\n`: SmolLM2, Qwen2.5), with the default system
//!   prompt the template inserts when the conversation has none;
//! - Gemma (`<start_of_turn>user\n...<end_of_turn>\n`, assistant turns as `model`, a system
//!   message folded into the first user turn as Gemma 3's template does).

use super::TokenizerError;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with this role and content.
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A chat format kiln can render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// ChatML; `default_system` is inserted when the first message is not a system message.
    ChatMl { default_system: Option<String> },
    /// Gemma's turns.
    Gemma,
}

impl ChatTemplate {
    /// Recognizes a template's text; without one, falls back on the vocabulary's turn tokens.
    pub fn detect(
        template: Option<&str>,
        has_token: impl Fn(&str) -> bool,
    ) -> Result<ChatTemplate, TokenizerError> {
        match template {
            Some(t) if t.contains("<|im_start|>") => Ok(ChatTemplate::ChatMl {
                default_system: chatml_default_system(t),
            }),
            Some(t) if t.contains("<start_of_turn>") => Ok(ChatTemplate::Gemma),
            Some(t) => Err(TokenizerError::ChatTemplate(format!(
                "unknown chat template (kiln knows ChatML and Gemma; format the prompt yourself \
                 and encode it with parse_special = true): {}",
                t.chars().take(120).collect::<String>()
            ))),
            None if has_token("<start_of_turn>") => Ok(ChatTemplate::Gemma),
            None if has_token("<|im_start|>") => Ok(ChatTemplate::ChatMl {
                default_system: None,
            }),
            None => Err(TokenizerError::ChatTemplate(
                "the model has no tokenizer.chat_template and no known turn tokens; format the \
                 prompt yourself"
                    .into(),
            )),
        }
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, it ends by opening the
    /// assistant's turn. The text holds special-token text: encode it with `parse_special`.
    /// BOS is not included; `encode(.., add_special = true, ..)` adds it where the model wants it.
    pub fn apply(&self, messages: &[Message], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        match self {
            ChatTemplate::ChatMl { default_system } => {
                if let Some(sys) = default_system
                    && messages.first().is_none_or(|m| m.role != "system")
                {
                    out += &format!("<|im_start|>system\n{sys}<|im_end|>\n");
                }
                for m in messages {
                    out += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    out += "<|im_start|>assistant\n";
                }
            }
            ChatTemplate::Gemma => {
                let (system, rest) = match messages.split_first() {
                    Some((first, rest)) if first.role == "system" => (Some(&first.content), rest),
                    _ => (None, messages),
                };
                for (i, m) in rest.iter().enumerate() {
                    let role = if m.role == "assistant" {
                        "model"
                    } else {
                        &m.role
                    };
                    out += &format!("<start_of_turn>{role}\n");
                    if i == 0
                        && let Some(sys) = system
                    {
                        out += &format!("{sys}\n\n");
                    }
                    out += &format!("{}<end_of_turn>\n", m.content.trim());
                }
                if add_generation_prompt {
                    out += "<start_of_turn>model\n";
                }
            }
        }
        out
    }
}

/// The system prompt a ChatML template writes when the conversation has none: the literal text
/// after `<|im_start|>system` + newline (or an escaped `\n`) up to `<|im_end|>`.
fn chatml_default_system(template: &str) -> Option<String> {
    const OPEN: &str = "<|im_start|>system";
    let mut rest = template;
    while let Some(i) = rest.find(OPEN) {
        rest = &rest[i + OPEN.len()..];
        let body = rest
            .strip_prefix("\\n")
            .or_else(|| rest.strip_prefix('\n'))?;
        // A quote right after the newline means the content is not a literal.
        if body.starts_with(['\'', '"']) {
            continue;
        }
        let end = body.find("<|im_end|>")?;
        let text = &body[..end];
        if text.contains(['\'', '"', '{']) {
            continue;
        }
        return Some(text.replace("\\n", "\n"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_system_prompt_is_found_in_escaped_and_raw_templates() {
        let qwen = r"{{- '<|im_start|>system\n' }}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{{- '<|im_start|>system\nYou are Qwen.<|im_end|>\n' }}";
        assert_eq!(
            chatml_default_system(qwen).as_deref(),
            Some("You are Qwen.")
        );
        let smol = "{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}";
        assert_eq!(
            chatml_default_system(smol).as_deref(),
            Some("You are SmolLM")
        );
        assert_eq!(chatml_default_system("{{'<|im_start|>' + role}}"), None);
    }

    #[test]
    fn unknown_template_is_an_error() {
        let e = ChatTemplate::detect(Some("[INST] {{ x }}"), |_| false).unwrap_err();
        assert!(e.to_string().contains("unknown chat template"), "{e}");
    }
}
