namespace FastMM.Runtime.Templates;

/// <summary>
/// A Hugging Face chat template (a jinja2 subset) parsed once and rendered many times, byte-identical to
/// transformers' apply_chat_template (jinja2 ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
/// loopcontrols; globals raise_exception and strftime_now; its own tojson). Thread-safe after Parse.
/// </summary>
public sealed class ChatTemplate
{
    private readonly List<Node> _body;

    public string Source { get; }
    public string SourceName { get; }

    /// <summary>Special tokens from tokenizer_config.json when loaded with <see cref="ChatTemplates.FromFolder"/>.</summary>
    public string? BosToken { get; init; }
    public string? EosToken { get; init; }
    public string? PadToken { get; init; }
    public string? UnkToken { get; init; }

    /// <summary>The clock strftime_now reads (local time, like Python's datetime.now()).</summary>
    public TimeProvider Clock { get; private init; } = TimeProvider.System;

    /// <summary>A copy whose strftime_now reads <paramref name="clock"/> (reproducible renders, tests).</summary>
    public ChatTemplate WithClock(TimeProvider clock) =>
        new(Source, SourceName, _body) { BosToken = BosToken, EosToken = EosToken, PadToken = PadToken, UnkToken = UnkToken, Clock = clock };

    private ChatTemplate(string source, string sourceName, List<Node> body)
    {
        Source = source;
        SourceName = sourceName;
        _body = body;
    }

    /// <summary>Parses a template; unsupported constructs and syntax errors throw <see cref="ChatTemplateException"/> naming the line.</summary>
    public static ChatTemplate Parse(string source, string sourceName = "chat template")
    {
        ArgumentNullException.ThrowIfNull(source);
        return new ChatTemplate(source, sourceName, TemplateParser.Parse(source, sourceName));
    }

    internal ChatTemplate WithSpecialTokens(string? bos, string? eos, string? pad, string? unk) =>
        new(Source, SourceName, _body) { BosToken = bos, EosToken = eos, PadToken = pad, UnkToken = unk, Clock = Clock };

    /// <summary>Renders with the given variables (CLR primitives, dictionaries, lists or JsonElement values).</summary>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var root = new Scope(null);
        foreach (var (name, value) in variables) root.Set(name, Py.FromClr(value, name));
        return new Interpreter(SourceName, Clock).Render(_body, root);
    }

    /// <summary>
    /// transformers' apply_chat_template(messages, add_generation_prompt=..., tokenize=False): messages plus the
    /// special tokens, tools and documents (None unless given in <paramref name="extra"/>) and any extra kwargs.
    /// Null tokens fall back to those read from tokenizer_config.json.
    /// </summary>
    public string ApplyChatTemplate(IReadOnlyList<Dictionary<string, object?>> messages, bool addGenerationPrompt,
        string? bosToken = null, string? eosToken = null, IReadOnlyDictionary<string, object?>? extra = null)
    {
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages,
            ["tools"] = null,
            ["documents"] = null,
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        // transformers passes the tokenizer's special tokens only when they are set.
        void Token(string name, string? value) { if (value is not null) vars[name] = value; }
        Token("bos_token", bosToken ?? BosToken);
        Token("eos_token", eosToken ?? EosToken);
        Token("pad_token", PadToken);
        Token("unk_token", UnkToken);
        if (extra is not null)
            foreach (var (k, v) in extra) vars[k] = v;
        return Render(vars);
    }
}
