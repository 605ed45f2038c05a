using System.Text.Json;

namespace FastMM.Tests.Images;

/// <summary>Locations of the fixtures written by tools/make_image_goldens.py (copied to the test output under data/).</summary>
internal static class ImageTestData
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "data", "images");

    public static string File(string name) => Path.Combine(Dir, name);

    public static JsonElement Manifest { get; } = JsonDocument.Parse(System.IO.File.ReadAllText(File("manifest.json"))).RootElement;

    public static string[] Images => Manifest.GetProperty("images").EnumerateArray().Select(e => e.GetString()!).ToArray();

    public static string[] OrientationImages => Manifest.GetProperty("orientation").EnumerateArray().Select(e => e.GetString()!).ToArray();

    public static string ConfigPath(string config) => Path.Combine(Dir, "configs", config, "preprocessor_config.json");

    public static bool IsJpeg(string name) => name.EndsWith(".jpg", StringComparison.OrdinalIgnoreCase);
}
