using System.Text.Json;

namespace FastMM.Runtime.Templates;

/// <summary>Finds a model folder's chat template the way transformers does.</summary>
public static class ChatTemplates
{
    /// <summary>
    /// tokenizer_config.json "chat_template" (a string, or a list of {name, template} where "default" is used),
    /// else chat_template.json {"chat_template": ...}, else chat_template.jinja; null when the folder has none.
    /// Special tokens (bos/eos/pad/unk) come from tokenizer_config.json when present.
    /// </summary>
    public static ChatTemplate? FromFolder(string modelDir)
    {
        if (!Directory.Exists(modelDir)) throw new FastMMException($"{modelDir}: model folder not found");
        string configPath = Path.Combine(modelDir, "tokenizer_config.json");
        string? source = null, sourceName = null;
        string? bos = null, eos = null, pad = null, unk = null;
        if (File.Exists(configPath))
        {
            using var doc = ReadJson(configPath);
            var root = doc.RootElement;
            bos = TokenText(root, "bos_token", configPath);
            eos = TokenText(root, "eos_token", configPath);
            pad = TokenText(root, "pad_token", configPath);
            unk = TokenText(root, "unk_token", configPath);
            if (root.TryGetProperty("chat_template", out var ct) && ct.ValueKind != JsonValueKind.Null)
            {
                source = TemplateText(ct, configPath);
                sourceName = $"{configPath} chat_template";
            }
        }
        if (source is null)
        {
            string jsonPath = Path.Combine(modelDir, "chat_template.json");
            string jinjaPath = Path.Combine(modelDir, "chat_template.jinja");
            if (File.Exists(jsonPath))
            {
                using var doc = ReadJson(jsonPath);
                if (!doc.RootElement.TryGetProperty("chat_template", out var ct))
                    throw new FastMMException($"{jsonPath}: missing \"chat_template\"");
                source = TemplateText(ct, jsonPath);
                sourceName = $"{jsonPath} chat_template";
            }
            else if (File.Exists(jinjaPath))
            {
                source = File.ReadAllText(jinjaPath);
                sourceName = jinjaPath;
            }
        }
        if (source is null) return null;
        return ChatTemplate.Parse(source, sourceName!).WithSpecialTokens(bos, eos, pad, unk);
    }

    private static JsonDocument ReadJson(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            var doc = JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = true });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new FastMMException($"{path}: expected a JSON object");
            }
            return doc;
        }
        catch (JsonException e) { throw new FastMMException($"{path}: not valid JSON: {e.Message}", e); }
        catch (IOException e) { throw new FastMMException($"{path}: cannot read: {e.Message}", e); }
    }

    /// <summary>A special token given as "text" or as an AddedToken object {"content": "text", ...}.</summary>
    private static string? TokenText(JsonElement root, string name, string path)
    {
        if (!root.TryGetProperty(name, out var t) || t.ValueKind == JsonValueKind.Null) return null;
        if (t.ValueKind == JsonValueKind.String) return t.GetString();
        if (t.ValueKind == JsonValueKind.Object && t.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String) return c.GetString();
        throw new FastMMException($"{path}: \"{name}\" must be a string or an object with \"content\"");
    }

    private static string TemplateText(JsonElement ct, string path)
    {
        if (ct.ValueKind == JsonValueKind.String) return ct.GetString()!;
        if (ct.ValueKind == JsonValueKind.Array)
        {
            // Named templates: transformers uses "default" unless the caller picks another.
            foreach (var entry in ct.EnumerateArray())
                if (entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String
                    && n.GetString() == "default" && entry.TryGetProperty("template", out var tpl) && tpl.ValueKind == JsonValueKind.String)
                    return tpl.GetString()!;
            throw new FastMMException($"{path}: \"chat_template\" lists named templates but none is named \"default\"");
        }
        throw new FastMMException($"{path}: \"chat_template\" must be a string or a list of {{name, template}}");
    }
}
