using FastMM.Runtime.Templates;
using FastMM.Tests.Support;

namespace FastMM.Tests.Templates;

/// <summary>Unsupported constructs fail at parse time naming construct and line; hostile templates end with one clear error.</summary>
public class HostileTemplateTests
{
    [Theory]
    [InlineData("a\nb\n{{ x | wordwrap(3) }}", 3, "filter 'wordwrap' is not supported")]
    [InlineData("{% extends 'base.html' %}", 1, "tag 'extends' is not supported")]
    [InlineData("\n{% include 'x.jinja' %}", 2, "tag 'include' is not supported")]
    [InlineData("{% for x in xs recursive %}{% endfor %}", 1, "recursive for loops are not supported")]
    [InlineData("{% raw %}{{ x }}{% endraw %}", 1, "'raw' blocks are not supported")]
    [InlineData("{{ cycler('a', 'b') }}", 1, "global function 'cycler' is not supported")]
    [InlineData("{{ f(*args) }}", 1, "*args and **kwargs in calls are not supported")]
    [InlineData("{{ x is frobbable }}", 1, "test 'frobbable' is not supported")]
    [InlineData("{% if x %}\n{% frobnicate %}\n{% endif %}", 2, "unknown tag 'frobnicate'")]
    public void UnsupportedConstructFailsAtParseTime(string source, int line, string message)
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source, "chat template"));
        Assert.Equal($"chat template line {line}: {message}", ex.Message);
        Assert.Equal(line, ex.Line);
        Assert.IsAssignableFrom<FastMMException>(ex);
    }

    [Theory]
    [InlineData("{% if true %}never closed", "'if' tag opened on line 1 is not closed")]
    [InlineData("{% for m in messages %}\n{{ m }}", "'for' tag opened on line 1 is not closed")]
    [InlineData("{% macro m() %}x", "'macro' tag opened on line 1 is not closed")]
    [InlineData("Hello {{ name", "'{{' is not closed")]
    [InlineData("Hello {% if x", "'{%' tag is not closed")]
    [InlineData("a {# never closed", "missing end of comment tag")]
    [InlineData("{{ 'abc }}", "unterminated string literal")]
    [InlineData("{{ (1 + 2 }}", "expected ')'")]
    [InlineData("{{ 1 + }}", "unexpected '}}' in expression")]
    [InlineData("{% endfor %}", "unexpected tag 'endfor'")]
    [InlineData("{% break %}", "'break' outside of a for loop")]
    [InlineData("{{ x ] }}", "unexpected ']'")]
    public void BrokenTemplateGivesOneClearError(string source, string fragment)
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source, "t"));
        Assert.Contains(fragment, ex.Message);
    }

    [Fact]
    public void DeeplyNestedExpressionIsRejected()
    {
        string source = "{{ " + new string('(', 5000) + "1" + new string(')', 5000) + " }}";
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source, "t"));
        Assert.Contains("nested too deeply", ex.Message);
    }

    [Fact]
    public void DeeplyNestedBlocksAreRejected()
    {
        string source = string.Concat(Enumerable.Repeat("{% if true %}", 5000)) + "x" + string.Concat(Enumerable.Repeat("{% endif %}", 5000));
        Assert.Contains("nested too deeply", Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source, "t")).Message);
        Assert.Contains("nested too deeply", Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{{ " + string.Concat(Enumerable.Repeat("not ", 5000)) + "x }}", "t")).Message);
        Assert.Contains("nested too deeply", Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{{ " + string.Concat(Enumerable.Repeat("-", 5000)) + "1 }}", "t")).Message);
    }

    [Fact]
    public void ModerateNestingStillWorks()
    {
        string source = string.Concat(Enumerable.Repeat("{% if true %}", 40)) + "x" + string.Concat(Enumerable.Repeat("{% endif %}", 40));
        Assert.Equal("x", ChatTemplate.Parse(source, "t").Render(new Dictionary<string, object?>()));
    }

    [Fact]
    public void InfiniteRecursionStops()
    {
        var t = ChatTemplate.Parse("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "t");
        var ex = Assert.Throws<ChatTemplateException>(() => t.Render(new Dictionary<string, object?>()));
        Assert.Contains("recursion too deep", ex.Message);
    }

    [Fact]
    public void HugeLoopsStop()
    {
        var t = ChatTemplate.Parse("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "t");
        var ex = Assert.Throws<ChatTemplateException>(() => t.Render(new Dictionary<string, object?>()));
        Assert.Contains("loop iterations", ex.Message);
    }

    [Theory]
    [InlineData("{{ 'x' * 100000000 }}")]
    [InlineData("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}{% endfor %}")]
    [InlineData("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}")]
    public void HugeOutputStops(string source)
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source, "t").Render(new Dictionary<string, object?>()));
        Assert.Contains("exceeds", ex.Message);
    }

    [Fact]
    public void RuntimeErrorNamesTheLine()
    {
        var t = ChatTemplate.Parse("line one\n{% if true %}\n{{ missing.attr }}\n{% endif %}", "chat template");
        var ex = Assert.Throws<ChatTemplateException>(() => t.Render(new Dictionary<string, object?>()));
        Assert.Equal("chat template line 3: 'missing' is undefined", ex.Message);
    }

    [Fact]
    public void UnsupportedInputTypeIsRejected()
    {
        var t = ChatTemplate.Parse("{{ x }}", "t");
        var ex = Assert.Throws<FastMMException>(() => t.Render(new Dictionary<string, object?> { ["x"] = new object() }));
        Assert.Contains("not supported", ex.Message);
    }

    [Fact]
    public void TildeConcatAndTrimInLlama3Style()
    {
        var t = ChatTemplate.Parse("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' ~ m['role'] ~ '<|end_header_id|>\\n\\n' ~ m['content'] | trim ~ '<|eot_id|>' }}{% endfor %}", "t");
        var messages = new List<Dictionary<string, object?>> { new() { ["role"] = "user", ["content"] = "  hi  " } };
        Assert.Equal("<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", t.ApplyChatTemplate(messages, false, "<s>", null));
    }
}

public class ChatTemplateLoadingTests
{
    private const string Tpl = "{% for m in messages %}{{ bos_token }}{{ m['role'] }}:{{ m['content'] }}{{ eos_token }}{% endfor %}";

    private static readonly List<Dictionary<string, object?>> Messages = [new() { ["role"] = "user", ["content"] = "hi" }];

    [Fact]
    public void TokenizerConfigStringWins()
    {
        using var dir = new TestPaths.TempDir();
        File.WriteAllText(dir["tokenizer_config.json"], """{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "chat_template": "{% for m in messages %}{{ bos_token }}{{ m['role'] }}:{{ m['content'] }}{{ eos_token }}{% endfor %}"}""");
        File.WriteAllText(dir["chat_template.jinja"], "ignored");
        var t = ChatTemplates.FromFolder(dir.Path)!;
        Assert.Equal("<s>", t.BosToken);
        Assert.Equal("<s>user:hi</s>", t.ApplyChatTemplate(Messages, false));
        Assert.Equal("[user:hi]", t.ApplyChatTemplate(Messages, false, "[", "]"));
    }

    [Fact]
    public void NamedTemplatesPickDefault()
    {
        using var dir = new TestPaths.TempDir();
        File.WriteAllText(dir["tokenizer_config.json"], """{"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "default:{{ messages | length }}"}]}""");
        Assert.Equal("default:1", ChatTemplates.FromFolder(dir.Path)!.ApplyChatTemplate(Messages, false));
    }

    [Fact]
    public void ChatTemplateJsonThenJinja()
    {
        using var dir = new TestPaths.TempDir();
        File.WriteAllText(dir["tokenizer_config.json"], """{"eos_token": "<e>"}""");
        File.WriteAllText(dir["chat_template.jinja"], "jinja file\n");
        Assert.Equal("jinja file", ChatTemplates.FromFolder(dir.Path)!.ApplyChatTemplate(Messages, false));
        File.WriteAllText(dir["chat_template.json"], """{"chat_template": "json:{{ eos_token }}"}""");
        Assert.Equal("json:<e>", ChatTemplates.FromFolder(dir.Path)!.ApplyChatTemplate(Messages, false));
    }

    [Fact]
    public void NoTemplateGivesNull()
    {
        using var dir = new TestPaths.TempDir();
        Assert.Null(ChatTemplates.FromFolder(dir.Path));
        File.WriteAllText(dir["tokenizer_config.json"], """{"chat_template": null}""");
        Assert.Null(ChatTemplates.FromFolder(dir.Path));
    }

    [Fact]
    public void BadFilesFailClearly()
    {
        using var dir = new TestPaths.TempDir();
        File.WriteAllText(dir["tokenizer_config.json"], "{not json");
        Assert.Contains("not valid JSON", Assert.Throws<FastMMException>(() => ChatTemplates.FromFolder(dir.Path)).Message);
        File.WriteAllText(dir["tokenizer_config.json"], """{"chat_template": [{"name": "x", "template": "y"}]}""");
        Assert.Contains("none is named \"default\"", Assert.Throws<FastMMException>(() => ChatTemplates.FromFolder(dir.Path)).Message);
        File.WriteAllText(dir["tokenizer_config.json"], """{"chat_template": "{% if %}"}""");
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplates.FromFolder(dir.Path));
        Assert.Contains("tokenizer_config.json chat_template line 1", ex.Message);
        Assert.Throws<FastMMException>(() => ChatTemplates.FromFolder(dir["missing"]));
    }
}
