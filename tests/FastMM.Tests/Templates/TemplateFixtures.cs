using System.Text.Json;
using FastMM.Runtime.Templates;
using FastMM.Tests.Support;

namespace FastMM.Tests.Templates;

/// <summary>Reference outputs written by tools/templates/render_reference.py (Python jinja2 configured like transformers).</summary>
internal static class TemplateFixtures
{
    public static string Dir => Path.Combine(TestPaths.Data, "templates");

    private static readonly Lazy<Dictionary<string, JsonElement>> CasesByName = new(() => Load("cases.json", "cases"));
    private static readonly Lazy<Dictionary<string, JsonElement>> ConstructsByName = new(() => Load("constructs.json", "constructs"));

    private static Dictionary<string, JsonElement> Load(string file, string key)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, file)));
        return doc.RootElement.GetProperty(key).EnumerateArray()
            .ToDictionary(e => e.GetProperty("name").GetString()!, e => e.Clone());
    }

    public static IEnumerable<string> CaseNames => CasesByName.Value.Keys;
    public static JsonElement Case(string name) => CasesByName.Value[name];
    public static IEnumerable<string> ConstructNames => ConstructsByName.Value.Keys;
    public static JsonElement Construct(string name) => ConstructsByName.Value[name];

    /// <summary>The clock the reference pinned for strftime_now: 2024-07-26 09:05:03 local.</summary>
    public static TimeProvider FixedClock { get; } = new FixedTimeProvider(new DateTimeOffset(2024, 7, 26, 9, 5, 3, TimeSpan.Zero));

    public static ChatTemplate LoadTemplate(string name) =>
        ChatTemplate.Parse(File.ReadAllText(Path.Combine(Dir, name + ".jinja")), name + ".jinja");

    public static string? OptString(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    /// <summary>Variables as the template sees them: JSON values passed straight through.</summary>
    public static Dictionary<string, object?> Variables(JsonElement obj) =>
        obj.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone());

    private sealed class FixedTimeProvider(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
        public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
    }
}
