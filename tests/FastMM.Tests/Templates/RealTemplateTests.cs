using System.Text.Json;
using FastMM.Runtime.Templates;

namespace FastMM.Tests.Templates;

/// <summary>Real model chat templates over many conversations must render byte-identical to Python jinja2.</summary>
public class RealTemplateTests
{
    public static TheoryData<string> Cases() => new(TemplateFixtures.CaseNames);

    [Theory]
    [MemberData(nameof(Cases))]
    public void RendersLikeJinja2(string name)
    {
        var c = TemplateFixtures.Case(name);
        var template = TemplateFixtures.LoadTemplate(c.GetProperty("template").GetString()!);
        var messages = c.GetProperty("messages").EnumerateArray()
            .Select(m => m.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone()))
            .ToList();
        var extra = TemplateFixtures.Variables(c.GetProperty("extra"));
        string Render() => template.ApplyChatTemplate(messages, c.GetProperty("add_generation_prompt").GetBoolean(),
            TemplateFixtures.OptString(c, "bos_token"), TemplateFixtures.OptString(c, "eos_token"), extra);

        if (TemplateFixtures.OptString(c, "error") is { } error)
        {
            var ex = Assert.Throws<ChatTemplateException>(Render);
            Assert.Equal(error, ex.TemplateMessage);
            Assert.IsAssignableFrom<FastMMException>(ex);
            return;
        }
        Assert.Equal(c.GetProperty("expected").GetString(), Render());
    }

    [Fact]
    public void EveryShippedTemplateIsCovered()
    {
        var used = TemplateFixtures.CaseNames.Select(n => TemplateFixtures.Case(n).GetProperty("template").GetString()).ToHashSet();
        var files = Directory.GetFiles(TemplateFixtures.Dir, "*.jinja").Select(f => Path.GetFileNameWithoutExtension(f)).ToHashSet();
        Assert.Equal(files.Order(), used.Order()!);
        Assert.True(files.Count >= 9);
    }

    [Fact]
    public void RaiseExceptionMessageIsTheTemplatesOwn()
    {
        var template = TemplateFixtures.LoadTemplate("llama2");
        var messages = new List<Dictionary<string, object?>>
        {
            new() { ["role"] = "assistant", ["content"] = "first" },
        };
        var ex = Assert.Throws<ChatTemplateException>(() => template.ApplyChatTemplate(messages, false, "<s>", "</s>"));
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", ex.TemplateMessage);
        Assert.Contains("line 1", ex.Message);
    }

    [Fact]
    public void ClrMessagesRenderLikeJsonMessages()
    {
        // Plain CLR dictionaries and lists (what a server builds) render exactly like the JSON fixture.
        var c = TemplateFixtures.Case("smolvlm/multi_turn_earlier_image/gen");
        var messages = new List<Dictionary<string, object?>>
        {
            new() { ["role"] = "user", ["content"] = new List<object?> { new Dictionary<string, object?> { ["type"] = "image" }, new Dictionary<string, object?> { ["type"] = "text", ["text"] = "What animal is this?" } } },
            new() { ["role"] = "assistant", ["content"] = new object[] { new Dictionary<string, object?> { ["type"] = "text", ["text"] = "It is a cat." } } },
            new() { ["role"] = "user", ["content"] = new[] { new Dictionary<string, object?> { ["type"] = "text", ["text"] = "What colour is it?" } } },
        };
        var template = TemplateFixtures.LoadTemplate("smolvlm");
        Assert.Equal(c.GetProperty("expected").GetString(), template.ApplyChatTemplate(messages, true, "<|im_start|>", "<end_of_utterance>"));
    }
}
