#!/usr/bin/python3
"""Renders real Hugging Face chat templates and construct snippets with Python jinja2, configured exactly as
transformers' apply_chat_template configures it, and writes the expected outputs the C# tests compare against.

Run with Debian's python3 (it has jinja2):  /usr/bin/python3 tools/templates/render_reference.py
Writes tests/data/templates/{*.jinja, cases.json, constructs.json}.
"""
import json
import os
from datetime import datetime

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "templates")
# strftime_now reads the clock; the reference pins it so outputs are reproducible (the C# tests pin theirs too).
FIXED_NOW = datetime(2024, 7, 26, 9, 5, 3)


class AssistantTracker(Extension):
    """transformers' {% generation %} tag: renders its body unchanged (it only records assistant offsets)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    # Mirrors transformers.utils.chat_template_utils._compile_jinja_template.
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# ---- Real templates, verbatim as their authors ship them (JSON strings decoded: "\n" is a newline, "\\n" a backslash-n).

TEMPLATES = {
    # HuggingFaceTB/SmolVLM-256M-Instruct chat_template.json (Idefics3 processor format)
    "smolvlm": "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}",
    # llava-hf/llava-1.5-7b-hf chat_template.json
    "llava-1.5": "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}",
    # llava-hf/llava-interleave-qwen-0.5b-hf chat_template.json
    "llava-interleave-qwen": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    # Qwen/Qwen2-0.5B-Instruct tokenizer_config.json
    "qwen2": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    # HuggingFaceTB/SmolLM2-135M-Instruct tokenizer_config.json
    "smollm2": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    # meta-llama/Llama-2-7b-chat-hf tokenizer_config.json
    "llama2": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    # meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
}

# meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json (multi-line, {%- -%}, tools, tojson(indent=4), items)
TEMPLATES["llama3.1"] = r'''{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
'''

# Qwen/Qwen2.5-0.5B-Instruct tokenizer_config.json (tools, tool_calls, consecutive tool responses)
TEMPLATES["qwen2.5"] = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''

TOKENS = {
    "smolvlm": ("<|im_start|>", "<end_of_utterance>"),
    "llava-1.5": ("<s>", "</s>"),
    "llava-interleave-qwen": (None, "<|im_end|>"),
    "qwen2": (None, "<|im_end|>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5": (None, "<|im_end|>"),
}

# ---- Conversations

def img():
    return {"type": "image"}


def txt(t):
    return {"type": "text", "text": t}


UNICODE = "Ça va? 日本語のテキスト 👋🏽 — ñ\u00a0ü\tTab «quotes» \"double\" 'single' \\ backslash"

VISION_CONVERSATIONS = {
    "single_image": [{"role": "user", "content": [img(), txt("What is in this image?")]}],
    "text_then_image": [{"role": "user", "content": [txt("Describe this:"), img()]}],
    "two_images": [{"role": "user", "content": [img(), img(), txt("Compare these two pictures.")]}],
    "multi_turn_earlier_image": [
        {"role": "user", "content": [img(), txt("What animal is this?")]},
        {"role": "assistant", "content": [txt("It is a cat.")]},
        {"role": "user", "content": [txt("What colour is it?")]},
    ],
    "images_in_two_turns": [
        {"role": "user", "content": [img(), txt("First picture.")]},
        {"role": "assistant", "content": [txt("Noted.")]},
        {"role": "user", "content": [txt("And this one?"), img(), txt("Same scene?")]},
    ],
    "system_message": [
        {"role": "system", "content": [txt("You are a careful vision assistant.")]},
        {"role": "user", "content": [img(), txt("Read the sign.")]},
    ],
    "unicode": [{"role": "user", "content": [img(), txt(UNICODE)]}],
    "text_only": [{"role": "user", "content": [txt("  Hello there!  ")]}],
}

TEXT_CONVERSATIONS = {
    "single_turn": [{"role": "user", "content": "Hello!"}],
    "system_user": [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Who are you?"}],
    "multi_turn": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "  It is 4.  "},
        {"role": "user", "content": "And 3+3?\n"},
    ],
    "system_multi_turn": [
        {"role": "system", "content": " Be brief. "},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ],
    "unicode": [{"role": "user", "content": UNICODE}, {"role": "assistant", "content": "\n  多谢 🙏\n"}],
    "empty_content": [{"role": "user", "content": ""}],
}

BAD_ORDER = [{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "Hi"}]
TWO_USERS = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city. Ünïcode ok.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
                "detailed": {"type": "boolean", "default": False, "nullable": None},
                "empty": {"type": "object", "properties": {}, "required": []},
            },
            "required": ["city"],
        },
    },
}

TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools when needed."},
    {"role": "user", "content": "Weather in Paris and Tokyo?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
    {"role": "tool", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
    {"role": "tool", "content": "Tokyo: 30°C"},
    {"role": "assistant", "content": "Paris is 21.5°C and Tokyo 30°C."},
]

LLAMA31_TOOL_CONVERSATION = [
    {"role": "user", "content": "  Weather in Paris?  "},
    {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
    {"role": "tool", "content": {"temp": 21.5, "ok": True, "note": None}},
    {"role": "ipython", "content": "plain text result"},
]


def render_case(env, name, template_name, messages, add_generation_prompt, extra=None):
    bos, eos = TOKENS[template_name]
    kwargs = {}
    if bos is not None:
        kwargs["bos_token"] = bos
    if eos is not None:
        kwargs["eos_token"] = eos
    kwargs.update(extra or {})
    case = {
        "name": name, "template": template_name, "messages": messages,
        "add_generation_prompt": add_generation_prompt, "bos_token": bos, "eos_token": eos,
        "extra": extra or {}, "expected": None, "error": None,
    }
    compiled = env.from_string(TEMPLATES[template_name])
    try:
        case["expected"] = compiled.render(messages=messages, tools=kwargs.pop("tools", None), documents=None,
                                           add_generation_prompt=add_generation_prompt, **kwargs)
    except jinja2.exceptions.TemplateError as e:
        case["error"] = str(e)
        case["error_type"] = type(e).__name__
    return case


def build_cases(env):
    cases = []
    vision = ["smolvlm", "llava-1.5", "llava-interleave-qwen"]
    text = ["qwen2", "smollm2", "llama2", "llama3", "llama3.1", "qwen2.5"]
    for t in vision:
        for conv_name, conv in VISION_CONVERSATIONS.items():
            for agp in (True, False):
                cases.append(render_case(env, f"{t}/{conv_name}/{'gen' if agp else 'nogen'}", t, conv, agp))
        # Plain-string content in a processor template: jinja indexes into the string and finds nothing.
        cases.append(render_case(env, f"{t}/string_content", t, [{"role": "user", "content": "Hi"}], True))
    for t in text:
        for conv_name, conv in TEXT_CONVERSATIONS.items():
            for agp in (True, False):
                cases.append(render_case(env, f"{t}/{conv_name}/{'gen' if agp else 'nogen'}", t, conv, agp))
    cases.append(render_case(env, "llama2/bad_role_order", "llama2", BAD_ORDER, False))
    cases.append(render_case(env, "llama2/two_users", "llama2", TWO_USERS, False))
    cases.append(render_case(env, "qwen2.5/tools", "qwen2.5", TOOL_CONVERSATION, True, {"tools": [WEATHER_TOOL]}))
    cases.append(render_case(env, "qwen2.5/tool_calls_no_tools", "qwen2.5", TOOL_CONVERSATION, False))
    cases.append(render_case(env, "llama3.1/tools_in_user_message", "llama3.1", LLAMA31_TOOL_CONVERSATION, True, {"tools": [WEATHER_TOOL]}))
    cases.append(render_case(env, "llama3.1/tools_in_system", "llama3.1", TOOL_CONVERSATION[:2], True,
                             {"tools": [WEATHER_TOOL], "tools_in_user_message": False, "date_string": "01 Jan 2025"}))
    cases.append(render_case(env, "llama3.1/builtin_tools", "llama3.1", LLAMA31_TOOL_CONVERSATION[:2], True,
                             {"builtin_tools": ["code_interpreter", "get_weather", "brave_search"]}))
    cases.append(render_case(env, "llama3.1/tools_no_user_message", "llama3.1", [], True, {"tools": [WEATHER_TOOL]}))
    cases.append(render_case(env, "llama3.1/two_tool_calls", "llama3.1", [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}]}], False))
    return cases


# ---- Construct snippets: (name, template, variables). Variables are JSON so C# gets the same input.

CONSTRUCTS = [
    # whitespace control with trim_blocks + lstrip_blocks
    ("ws_trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("ws_lstrip_indented", "<ul>\n    {% for x in xs %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>", {"xs": [1, 2]}),
    ("ws_minus_both", "a   {%- if true -%}   b   {%- endif -%}   c", {}),
    ("ws_minus_var", "a  \n {{- 'x' -}} \n  b", {}),
    ("ws_plus_lstrip", "line\n    {%+ if true %}kept{% endif %}", {}),
    ("ws_plus_trim", "{% if true +%}\nnewline kept{% endif %}", {}),
    ("ws_comment_lstrip", "a\n    {# note #}\nb", {}),
    ("ws_comment_minus", "a   {#- note -#}   b", {}),
    ("ws_comment_plus", "a\n  {#+ note +#}\nb", {}),
    ("ws_var_no_lstrip", "x\n    {{ 'v' }}\n", {}),
    ("ws_text_before_tag", "x  {% if true %}y{% endif %}", {}),
    ("ws_crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\r\n", {}),
    ("ws_trailing_newline_dropped", "text\n", {}),
    ("ws_two_trailing_newlines", "text\n\n", {}),
    ("ws_block_at_start", "   {% if true %}x{% endif %}", {}),
    ("ws_minus_eats_newlines", "{{ 'a' -}}\n\n\n   {{ 'b' }}", {}),
    ("ws_after_var_then_block", "{{ 'a' }}   {% if true %}b{% endif %}", {}),
    ("ws_nested_loops", "{% for i in [1,2] %}\n  {% for j in [3,4] %}\n    {{ i }}{{ j }}\n  {% endfor %}\n{% endfor %}\n", {}),
    ("ws_unicode_space_minus", "a\u00a0\u2003{%- if true %}b{% endif %}", {}),
    # literals and printing
    ("print_values", "{{ none }}|{{ true }}|{{ False }}|{{ 1 }}|{{ 1.0 }}|{{ 2.50 }}|{{ 1e3 }}|{{ 1e-7 }}|{{ 123456789012345678.0 }}|{{ 0.1 + 0.2 }}|{{ -0.0 }}", {}),
    ("print_containers", "{{ [1, 'a', none, true, 2.5, [], {}] }}|{{ {'k': 'v', 'n': [1]} }}|{{ (1,) }}|{{ (1, 'b') }}|{{ () }}", {}),
    ("print_string_repr", "{{ ['it\\'s', \"say \\\"hi\\\"\", 'tab\\there', 'nl\\n', 'uni é 👋'] }}", {}),
    ("string_escapes", "{{ 'a\\tb\\nc\\\\d\\x41\\u00e9\\U0001F600\\101\\q' }}", {}),
    ("adjacent_strings", "{{ 'a' \"b\" 'c' }}", {}),
    ("int_literals", "{{ 1_000 }}|{{ 0x1F }}|{{ 0o17 }}|{{ 0b101 }}", {}),
    # operators
    ("arith", "{{ 7 / 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7.5 % 2 }}|{{ 2 ** 10 }}|{{ 2 ** -1 }}|{{ 2 * 3 + 1 }}|{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ -2 ** 2 }}|{{ 10 - 2 - 3 }}", {}),
    ("string_ops", "{{ 'ab' + 'cd' }}|{{ 'ab' * 3 }}|{{ 'x' ~ 1 ~ none ~ true ~ 1.5 }}|{{ [1] + [2] }}|{{ [0] * 3 }}", {}),
    ("compare", "{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}|{{ 1 == 1.0 }}|{{ 'a' < 'b' }}|{{ 'a' != 'a' }}|{{ [1,2] == [1,2] }}|{{ true == 1 }}|{{ none == none }}|{{ 'B' < 'a' }}", {}),
    ("in_ops", "{{ 'a' in 'cat' }}|{{ 2 in [1,2] }}|{{ 'k' in {'k': 1} }}|{{ 'z' not in 'cat' }}|{{ 3 not in [1] }}|{{ 'x' in undefined_thing }}", {}),
    ("logic", "{{ true and 'x' }}|{{ 0 or 'y' }}|{{ not none }}|{{ '' or [] or 0 }}|{{ 1 and 0 }}|{{ not 1 == 2 }}", {}),
    ("cond_expr", "{{ 'a' if true else 'b' }}|{{ 'a' if false else 'b' }}|{{ 'a' if false }}|{{ 1 if x is defined else 2 }}", {}),
    ("precedence_filter_unary", "{{ -1 | abs }}|{{ 'a' ~ 'b' | upper }}|{{ (1 + 2) | string ~ 'x' }}", {}),
    # indexing / slicing / attributes
    ("index_slice", "{{ xs[0] }}|{{ xs[-1] }}|{{ xs[1:] }}|{{ xs[:-1] }}|{{ xs[::-1] }}|{{ xs[::2] }}|{{ xs[5] }}|{{ s[1:3] }}|{{ s[::-1] }}|{{ s[-1] }}|{{ xs[-10:10] }}|{{ xs[3:1:-1] }}", {"xs": [1, 2, 3, 4], "s": "héllo👋"}),
    ("attr_item_fallback", "{{ d.a }}|{{ d['a'] }}|{{ d.missing }}|{{ d['missing'] }}|{{ d.items()|list }}|{{ d['items'] is defined }}|{{ l.0 }}|{{ d.get('a') }}|{{ d.get('zz', 'dflt') }}|{{ d.keys()|list }}|{{ d.values()|list }}", {"d": {"a": 1, "b": [2]}, "l": ["first"]}),
    ("none_attribute", "{{ n.x }}|{{ n['x'] is defined }}", {"n": None}),
    ("string_methods", "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s.upper() }}|{{ s.lower() }}|{{ s.title() }}|{{ s.strip().split(' ') }}|{{ s.split() }}|{{ s.replace('l', 'L') }}|{{ s.startswith('  he') }}|{{ s.strip().endswith(('x', 'd')) }}|{{ 'a,b,,c'.split(',') }}|{{ 'a b c'.split(' ', 1) }}|{{ 'xxhixx'.strip('x') }}|{{ '-'.join(['a', 'b']) }}|{{ 'hello'.capitalize() }}|{{ \"they're bill's\".title() }}|{{ 'abcabc'.find('c') }}|{{ 'abcabc'.count('bc') }}", {"s": "  hello world  "}),
    ("split_whitespace_max", "{{ '  a  b  c  '.split(none, 1) }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ '  a  b  c  '.rsplit(none, 1) }}|{{ 'a-b-c'.rsplit('-', 1) }}", {}),
    # statements
    ("for_loop_vars", "{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}[{{ loop.previtem }}|{{ loop.nextitem }}]{{ loop.cycle('o', 'e') }};{% endfor %}", {"xs": ["a", "b", "c"]}),
    ("for_filter_else", "{% for x in xs if x > 1 %}{{ x }}{{ loop.length }}{% else %}empty{% endfor %}|{% for x in [] %}x{% else %}none{% endfor %}|{% for x in xs if x > 9 %}x{% else %}filtered-out{% endfor %}", {"xs": [1, 2, 3]}),
    ("for_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for c in 'hé' %}[{{ c }}]{% endfor %}", {"d": {"x": 1, "y": 2}}),
    ("for_break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("for_scoping", "{% set x = 1 %}{% for i in range(2) %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}", {}),
    ("nested_loop_outer", "{% for a in [1, 2] %}{% set outer = loop %}{% for b in [3, 4] %}{{ outer.index }}{{ loop.index }} {% endfor %}{% endfor %}", {}),
    ("if_elif_else", "{% for n in [0, 1, 2, 3] %}{% if n == 0 %}zero{% elif n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %},{% endfor %}", {}),
    ("set_if_scope", "{% if true %}{% set y = 3 %}{% endif %}{{ y }}{% set a, b = 1, 2 %}{{ a }}{{ b }}", {}),
    ("set_block", "{% set body %}Hello {{ name }}!\n{% endset %}[{{ body }}]{% set up | upper %}shout{% endset %}{{ up }}", {"name": "Ana"}),
    ("namespace", "{% set ns = namespace(found=false, n=0) %}{% for m in msgs %}{% if m.role == 'system' %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.found }} {{ ns.n }}", {"msgs": [{"role": "user"}, {"role": "system"}]}),
    ("macro_defaults", "{% macro greet(name, punct='!', times=1) %}{{ ('Hi ' ~ name ~ punct) * times }}{% endmacro %}{{ greet('A') }}|{{ greet('B', '?') }}|{{ greet('C', times=2) }}|{{ greet('D') | upper }}", {}),
    ("macro_call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ 1 + 1 }}{% endcall %}", {}),
    ("macro_call_args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(item) each([1, 2]) %}<{{ item }}>{% endcall %}", {}),
    ("macro_recursion", "{% macro count(n) %}{{ n }}{% if n > 0 %}{{ count(n - 1) }}{% endif %}{% endmacro %}{{ count(5) }}", {}),
    ("filter_block", "{% filter upper %}abc {{ 'def' }}{% endfilter %}", {}),
    ("generation_tag", "{% for m in msgs %}{% generation %}{{ m }}{% endgeneration %}{% endfor %}", {"msgs": ["a", "b"]}),
    ("comments", "a{# comment {{ not rendered }} #}b{# multi\nline #}c", {}),
    # filters
    ("filters_text", "{{ '  x y  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'hello WORLD' | capitalize }}|{{ 'hello big-world (x)' | title }}|{{ 'ab' | upper }}|{{ 'AB' | lower }}|{{ 'aaa' | replace('a', 'b', 2) }}|{{ 'abc' | length }}|{{ 'héllo👋' | length }}|{{ 'abc' | reverse }}|{{ 'abc' | list }}|{{ 'a b' | wordcount }}", {}),
    ("filters_default", "{{ missing | default('dflt') }}|{{ none | default('dflt') }}|{{ '' | default('dflt', true) }}|{{ missing | d('d') }}|{{ 0 | default(5, boolean=true) }}", {}),
    ("filters_lists", "{{ xs | first }}|{{ xs | last }}|{{ xs | join(', ') }}|{{ xs | length }}|{{ xs | count }}|{{ xs | sort }}|{{ xs | sort(reverse=true) }}|{{ xs | reverse | list }}|{{ xs | unique | list }}|{{ xs | max }}|{{ xs | min }}|{{ xs | sum }}|{{ [] | first is defined }}", {"xs": [3, 1, 2, 3]}),
    ("filters_sort_strings", "{{ ss | sort }}|{{ ss | sort(case_sensitive=true) }}|{{ ss | unique | list }}|{{ ss | max }}", {"ss": ["b", "A", "a", "C"]}),
    ("filters_attr", "{{ ms | selectattr('role', 'equalto', 'user') | list | length }}|{{ ms | rejectattr('role', 'eq', 'user') | map(attribute='content') | join('/') }}|{{ ms | map(attribute='role') | list }}|{{ ms | selectattr('extra') | list }}|{{ ms | map(attribute='nope', default='?') | list }}|{{ ms | sort(attribute='content') | map(attribute='content') | first }}|{{ ms | join(',', attribute='role') }}", {"ms": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "a", "extra": 1}, {"role": "user", "content": "c"}]}),
    ("filters_select", "{{ [1, 2, 3, 4] | select('odd') | list }}|{{ [1, 2, 3, 4] | reject('even') | list }}|{{ [0, 1, '', 'a'] | select | list }}|{{ ['a', 'b'] | map('upper') | list }}|{{ [1, 5, 9] | select('gt', 4) | list }}|{{ [1, 2] | select('in', [2, 3]) | list }}", {}),
    ("filters_numbers", "{{ '42' | int }}|{{ '4.7' | int }}|{{ 'x' | int }}|{{ 'x' | int(7) }}|{{ 3.9 | int }}|{{ '3.5' | float }}|{{ 'n' | float }}|{{ 2 | float }}|{{ 2.567 | round }}|{{ 2.567 | round(2) }}|{{ 2.5 | round }}|{{ 2.1 | round(method='ceil') }}|{{ -3 | abs }}|{{ '0x1A' | int(0, 16) }}|{{ true | int }}", {}),
    ("filters_dict", "{{ d | dictsort }}|{{ d | dictsort(by='value') }}|{{ d | items | list }}|{{ d | length }}|{{ d | list }}|{{ d | string }}", {"d": {"b": 2, "a": 3, "C": 1}}),
    ("filters_tojson", "{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ {'b': 1, 'a': [1, {}]} | tojson(sort_keys=true) }}|{{ 'é\"\\n<' | tojson }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [1.0, 1e20, none, true] | tojson }}|{{ {'a': 1} | tojson(separators=(',', ':')) }}", {"v": {"name": "f", "args": {"x": [1, 2.5, None, True, "s"], "empty": {}, "e2": []}}}),
    ("filters_indent_string", "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(1, blank=true) }}|{{ 12 | string ~ 3 }}|{{ [1, 'x'] | string }}|{{ '<a>' | safe }}|{{ '<a & \"b\">' | e }}", {}),
    ("generator_single_pass", "{% set g = xs | select('odd') %}{% for x in g %}{{ x }}{% endfor %}|{% for x in g %}{{ x }}{% endfor %}|{{ xs | select('odd') | first }}", {"xs": [1, 2, 3]}),
    # tests
    ("tests", "{{ x is defined }}{{ missing is undefined }}{{ none is none }}{{ 's' is string }}{{ 1 is number }}{{ 1.5 is number }}{{ true is number }}{{ {} is mapping }}{{ [] is iterable }}{{ 's' is iterable }}{{ 1 is iterable }}{{ [] is sequence }}{{ true is boolean }}{{ 1 is boolean }}{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}{{ 'a' is in 'abc' }}{{ 1 is equalto 1 }}{{ 1 is eq 2 }}{{ 1 is integer }}{{ 1.0 is float }}{{ x is not none }}{{ none is sameas none }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ raise_exception is callable }}{{ missing is iterable }}", {"x": 1}),
    ("undefined_behaviour", "[{{ missing }}]{{ missing | length }}{{ missing is defined }}{% for x in missing %}never{% endfor %}{% if not missing %}falsy{% endif %}{{ missing ~ 'x' }}{{ missing == none }}{{ missing | list }}", {}),
    ("globals", "{{ range(3) | list }}|{{ range(1, 10, 3) | list }}|{{ range(5, 0, -2) | list }}|{{ dict(a=1, b='x') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %d %b %B %a %A %j %p %I %y') }}", {}),
    ("messages_content_trim", "{{ messages[0]['content'] | trim }}", {"messages": [{"content": [{"type": "text", "text": "x"}]}]}),
    # errors (the C# side must raise ChatTemplateException)
    ("err_raise_exception", "{% if true %}{{ raise_exception('Custom failure: ' ~ 42) }}{% endif %}", {}),
    ("err_undefined_attribute", "{{ missing.attr }}", {}),
    ("err_undefined_item", "{{ messages[5]['role'] }}", {"messages": [{"role": "user"}]}),
    ("err_add_str_int", "{{ 'a' + 1 }}", {}),
    ("err_add_undefined", "{{ missing + 1 }}", {}),
    ("err_len_generator", "{{ [1] | select | length }}", {}),
    ("err_division_zero", "{{ 1 / 0 }}", {}),
    ("err_call_undefined", "{{ nofunc() }}", {}),
    ("err_iterate_int", "{% for x in 5 %}{% endfor %}", {}),
    ("err_unsafe_append", "{% set xs = [] %}{{ xs.append(1) }}", {}),
    ("err_tojson_undefined", "{{ missing | tojson }}", {}),
    ("err_set_attr_non_namespace", "{% set d = {} %}{% set d.x = 1 %}", {}),
    ("err_range_too_big", "{% for i in range(1000000) %}{% endfor %}", {}),
    ("err_compare_types", "{{ 1 < 'a' }}", {}),
]

# Syntax errors and unsupported constructs: jinja2 fails while compiling, and so must the C# parser.
PARSE_ERRORS = [
    ("unclosed_if", "{% if true %}never closed"),
    ("unclosed_for", "{% for x in xs %}{{ x }}"),
    ("unclosed_var", "Hello {{ name"),
    ("unclosed_block_tag", "Hello {% if x"),
    ("unclosed_comment", "a {# never closed"),
    ("unknown_tag", "{% frobnicate %}"),
    ("stray_endif", "{% endif %}"),
    ("unknown_filter", "{{ 'x' | frobnicate(3) }}"),
    ("unknown_test", "{{ x is frobbable }}"),
    ("bad_expression", "{{ 1 + }}"),
    ("unbalanced_paren", "{{ (1 + 2 }}"),
    ("else_after_else", "{% if a %}{% else %}{% else %}{% endif %}"),
    ("break_outside_loop", "{% break %}"),
    ("unterminated_string", "{{ 'abc }}"),
]


def build_constructs(env):
    out = []
    for name, template, variables in CONSTRUCTS:
        entry = {"name": name, "template": template, "variables": variables, "expected": None, "error": None}
        try:
            entry["expected"] = env.from_string(template).render(**variables)
        except Exception as e:  # noqa: BLE001 - any jinja2 failure is an expected error for the C# side
            entry["error"] = f"{type(e).__name__}: {e}"
        out.append(entry)
    for name, template in PARSE_ERRORS:
        entry = {"name": "parse_" + name, "template": template, "variables": {}, "expected": None, "error": None, "parse_error": True}
        try:
            env.from_string(template)
            raise SystemExit(f"{name}: jinja2 accepted the template")
        except (jinja2.exceptions.TemplateSyntaxError, SyntaxError) as e:  # 'break' outside a loop is Python's SyntaxError
            entry["error"] = f"{type(e).__name__}: {e}"
        out.append(entry)
    return out


def main():
    env = make_env()
    os.makedirs(OUT, exist_ok=True)
    for name, source in TEMPLATES.items():
        with open(os.path.join(OUT, name + ".jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(source)
    cases = build_cases(env)
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"jinja2_version": jinja2.__version__, "now": FIXED_NOW.isoformat(), "cases": cases}, f, ensure_ascii=False, indent=1)
    constructs = build_constructs(env)
    with open(os.path.join(OUT, "constructs.json"), "w", encoding="utf-8") as f:
        json.dump({"jinja2_version": jinja2.__version__, "now": FIXED_NOW.isoformat(), "constructs": constructs}, f, ensure_ascii=False, indent=1)
    errors = sum(1 for c in cases if c["error"])
    print(f"{len(cases)} cases ({errors} expected errors), {len(constructs)} constructs -> {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
