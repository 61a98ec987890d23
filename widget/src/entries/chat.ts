// Entry of chat.js (the launcher): registers <growth-chat>.
import "../launcher";
