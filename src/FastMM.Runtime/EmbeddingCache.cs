using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace FastMM.Runtime;

/// <summary>
/// Image embeddings of one model for the files of one folder, persisted so that a second search does not
/// re-encode the folder. An entry is reused only while the file's size and modification time are unchanged;
/// the cache file is keyed by the model's identity (folder, config and weight files' sizes and times).
/// </summary>
public sealed class EmbeddingCache
{
    private sealed record Entry(long Size, long MTimeTicks, float[] Embedding);
    private sealed record FileFormat(int Version, string ModelKey, int Dim, Dictionary<string, Entry> Entries);

    private const int FormatVersion = 1;
    private readonly Dictionary<string, Entry> _entries;
    private readonly string _path;
    private readonly string _modelKey;
    public int Dim { get; }
    public int Count => _entries.Count;

    private EmbeddingCache(string path, string modelKey, int dim, Dictionary<string, Entry> entries)
    {
        _path = path; _modelKey = modelKey; Dim = dim; _entries = entries;
    }

    /// <summary>The default cache folder: $FASTMM_CACHE, else $XDG_CACHE_HOME/fastmm, else ~/.cache/fastmm.</summary>
    public static string DefaultDirectory()
    {
        if (Environment.GetEnvironmentVariable("FASTMM_CACHE") is { Length: > 0 } c) return c;
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string root = string.IsNullOrEmpty(xdg) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache") : xdg;
        return Path.Combine(root, "fastmm");
    }

    /// <param name="variant">What else changes the embeddings besides the folder (e.g. the load-time quantization policy).</param>
    public static EmbeddingCache Open(string cacheDir, string modelDir, string imageFolder, int dim, string variant = "")
    {
        string modelKey = ModelKey(modelDir) + (variant.Length > 0 ? "|" + variant : "");
        string name = Hash(modelKey + "\n" + Path.GetFullPath(imageFolder));
        string path = Path.Combine(cacheDir, "embeddings", name + ".json");
        var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
        if (File.Exists(path))
        {
            try
            {
                var f = JsonSerializer.Deserialize<FileFormat>(File.ReadAllText(path));
                if (f is not null && f.Version == FormatVersion && f.ModelKey == modelKey && f.Dim == dim)
                    foreach (var (k, e) in f.Entries)
                        if (e.Embedding?.Length == dim) entries[k] = e;
            }
            catch (JsonException) { /* a damaged cache is only a cache: start over */ }
        }
        return new EmbeddingCache(path, modelKey, dim, entries);
    }

    public bool TryGet(string file, out float[] embedding)
    {
        var info = new FileInfo(file);
        if (_entries.TryGetValue(Path.GetFullPath(file), out var e) && e.Size == info.Length && e.MTimeTicks == info.LastWriteTimeUtc.Ticks)
        {
            embedding = e.Embedding;
            return true;
        }
        embedding = [];
        return false;
    }

    public void Put(string file, float[] embedding)
    {
        var info = new FileInfo(file);
        _entries[Path.GetFullPath(file)] = new Entry(info.Length, info.LastWriteTimeUtc.Ticks, embedding);
    }

    /// <summary>Drops entries for files no longer present and writes the cache atomically.</summary>
    public void Save(IEnumerable<string> presentFiles)
    {
        var keep = presentFiles.Select(Path.GetFullPath).ToHashSet(StringComparer.Ordinal);
        foreach (var k in _entries.Keys.Where(k => !keep.Contains(k)).ToList()) _entries.Remove(k);
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        string tmp = _path + "." + Environment.ProcessId + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(new FileFormat(FormatVersion, _modelKey, Dim, _entries)));
        File.Move(tmp, _path, overwrite: true);
    }

    private static string ModelKey(string modelDir)
    {
        var sb = new StringBuilder(Path.GetFullPath(modelDir));
        foreach (var f in Directory.GetFiles(modelDir).Order(StringComparer.Ordinal))
        {
            string n = Path.GetFileName(f);
            if (n.EndsWith(".json", StringComparison.Ordinal) || n.EndsWith(".safetensors", StringComparison.Ordinal))
            {
                var i = new FileInfo(f);
                sb.Append('|').Append(n).Append(':').Append(i.Length).Append(':').Append(i.LastWriteTimeUtc.Ticks);
            }
        }
        return Hash(sb.ToString());
    }

    private static string Hash(string s) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(s)))[..24].ToLowerInvariant();
}
