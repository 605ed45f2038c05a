namespace FastMM.Runtime.Tokenizers;

/// <summary>Adds the special tokens around one encoded sequence (HF "post_processor", single-sequence form).</summary>
internal abstract class PostProcessor
{
    public abstract int AddedTokenCount { get; }
    public abstract List<int> Process(List<int> ids);

    public static PostProcessor Load(ConfigNode n)
    {
        string type = n.TypeName();
        switch (type)
        {
            case "RobertaProcessing":
            case "BertProcessing":
                return new WrapProcessor(TokenId(n.Req("cls")), TokenId(n.Req("sep")));
            case "ByteLevel":
                return new SequenceProcessor([]);
            case "Sequence":
                return new SequenceProcessor(n.Req("processors").Items().Select(Load).ToArray());
            case "TemplateProcessing":
                return LoadTemplate(n);
            default:
                throw n.Unsupported(type);
        }
    }

    /// <summary>A ["token", id] pair.</summary>
    private static int TokenId(ConfigNode pair)
    {
        var items = pair.Items().ToArray();
        if (items.Length != 2) throw pair.Error("expected [token, id]");
        return items[1].AsInt();
    }

    private static PostProcessor LoadTemplate(ConfigNode n)
    {
        var specials = new Dictionary<string, int[]>();
        if (n.Opt("special_tokens") is { } st)
            foreach (var (name, value) in st.Properties())
                specials[name] = value.Req("ids").Items().Select(x => x.AsInt()).ToArray();
        var parts = new List<int[]?>(); // null = the sequence itself
        foreach (var item in n.Req("single").Items())
        {
            if (item.Opt("Sequence") is { } seq)
            {
                string id = seq.Str("id");
                if (id != "A") throw seq.Error($"single template refers to sequence '{id}'");
                parts.Add(null);
            }
            else if (item.Opt("SpecialToken") is { } sp)
            {
                string id = sp.Str("id");
                parts.Add(specials.TryGetValue(id, out var ids) ? ids : throw sp.Error($"special token '{id}' is not in special_tokens"));
            }
            else throw item.Error("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
        }
        return new TemplateProcessor(parts);
    }
}

/// <summary>BERT/RoBERTa single sequence: cls A sep.</summary>
internal sealed class WrapProcessor(int cls, int sep) : PostProcessor
{
    public override int AddedTokenCount => 2;

    public override List<int> Process(List<int> ids)
    {
        var r = new List<int>(ids.Count + 2) { cls };
        r.AddRange(ids);
        r.Add(sep);
        return r;
    }
}

internal sealed class TemplateProcessor(List<int[]?> parts) : PostProcessor
{
    public override int AddedTokenCount => parts.Sum(p => p?.Length ?? 0);

    public override List<int> Process(List<int> ids)
    {
        var r = new List<int>(ids.Count + AddedTokenCount);
        foreach (var p in parts)
        {
            if (p is null) r.AddRange(ids);
            else r.AddRange(p);
        }
        return r;
    }
}

internal sealed class SequenceProcessor(PostProcessor[] steps) : PostProcessor
{
    public override int AddedTokenCount => steps.Sum(s => s.AddedTokenCount);

    public override List<int> Process(List<int> ids)
    {
        foreach (var s in steps) ids = s.Process(ids);
        return ids;
    }
}
