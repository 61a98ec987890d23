// Entry of the panel bundle: registers the panel under window.__growthChatPanel[version].
import "../panel";
