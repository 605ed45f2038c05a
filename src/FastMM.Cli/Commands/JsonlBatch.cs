using System.Text.Json;
using System.Text.Json.Nodes;

namespace FastMM.Cli.Commands;

/// <summary>
/// The JSONL batch loop of `rank --batch` and `ask --batch`: one output line per input line, in order. A bad line
/// (malformed JSON, duplicate keys, missing fields, an image that does not decode, …) becomes {"id", "error"} and the
/// rest still run; the exit code is 1 when any line failed.
/// </summary>
internal static class JsonlBatch
{
    /// <param name="handle">Turns one input object into the output fields besides "id" (throws FastMMException for bad input).</param>
    public static int Run(string inPath, string outPath, TextWriter stderr, string verb, Action<JsonObject, JsonObject, string> handle)
    {
        string baseDir = Path.GetDirectoryName(inPath)!;
        int lineNo = 0, failed = 0, done = 0;
        using var writer = new StreamWriter(outPath);
        foreach (string line in File.ReadLines(inPath))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonNode? id = null;
            JsonObject record;
            try
            {
                JsonObject input;
                try
                {
                    input = JsonNode.Parse(line) as JsonObject ?? throw new FastMMException("not a JSON object");
                    id = input["id"]?.DeepClone();
                }
                catch (JsonException e) { throw new FastMMException($"invalid JSON ({e.Message})"); }
                catch (ArgumentException e) { throw new FastMMException($"invalid JSON ({e.Message})"); } // duplicate keys
                record = new JsonObject { ["id"] = id };
                handle(input, record, baseDir);
                done++;
            }
            catch (FastMMException e)
            {
                failed++;
                stderr.WriteLine($"{Path.GetFileName(inPath)}:{lineNo}: {e.Message}");
                record = new JsonObject { ["id"] = id?.DeepClone(), ["error"] = e.Message };
            }
            writer.WriteLine(record.ToJsonString());
            writer.Flush();
        }
        stderr.WriteLine($"{verb} {done} line(s), {failed} failed → {outPath}");
        return failed == 0 ? 0 : 1;
    }

    /// <summary>Relative image paths resolve against the working folder, then against the batch file's folder.</summary>
    public static string ResolvePath(string path, string batchDir)
        => Path.IsPathRooted(path) || File.Exists(path) ? path : Path.Combine(batchDir, path);

    public static string String(JsonObject o, string field)
        => o[field] is JsonValue v && v.TryGetValue(out string? s) ? s : throw new FastMMException($"\"{field}\" must be a string");
}
